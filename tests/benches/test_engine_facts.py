"""The string-vs-list<u8> measurement: every byte value reaches the host intact as a
latin-1 string, and the guest receives every code unit the host sends."""

from __future__ import annotations

from benches.engine_facts import render_string_vs_bytes, string_vs_bytes


async def test_bytes_cross_as_latin1_strings_both_ways() -> None:
    # string_vs_bytes checks the counts and the bytes the host received
    rows = await string_vs_bytes(total=1 << 17)
    shapes = {(r["shape"], r["direction"], r["chunk"]) for r in rows}
    assert ("string", "guest->host", 65536) in shapes
    assert ("string", "host->guest", 65536) in shapes
    assert all(r["mb_per_s"] > 0 for r in rows)
    assert "| 65,536 B | guest->host |" in render_string_vs_bytes(rows)
