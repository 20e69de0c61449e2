"""Guest output logged line by line: long lines are cut, nothing is held without bound."""

from __future__ import annotations

from fabric.workload.wasm import LineSink


def test_lines_are_emitted_with_their_prefix() -> None:
    lines: list[str] = []
    sink = LineSink("w/svc", lines.append)
    sink(b"one\ntw")
    sink(b"o\n\nthree")
    assert lines == ["[w/svc] one", "[w/svc] two", "[w/svc] "]
    sink.flush()
    assert lines[-1] == "[w/svc] three"
    assert sink.lines == 4


def test_output_without_newlines_is_emitted_in_pieces() -> None:
    lines: list[str] = []
    sink = LineSink("g", lines.append, max_line=10)
    for _ in range(5):
        sink(b"x" * 7)  # 35 bytes, no newline
    assert lines == ["[g] " + "x" * 10] * 3
    sink(b"yy\n" + b"z" * 25 + b"\n")
    assert lines[3:] == ["[g] xxxxxyy", "[g] " + "z" * 10, "[g] " + "z" * 10, "[g] zzzzz"]
    sink.flush()
    assert len(lines) == 7  # nothing was left over
