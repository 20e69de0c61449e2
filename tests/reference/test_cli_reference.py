"""The ``cli`` guest under the wasmtime CLI: the baseline fabric must reproduce."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.reference.cases import CLI_CASES, Case, assert_facts
from tests.reference.guests import guest_path
from tests.reference.wasmtime_cli import TRAP_EXIT_CODE, run_guest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda case: case.id)
def test_cli_case(case: Case) -> None:
    result = run_guest(guest_path(case.guest), *case.args, stdin=case.stdin, env=case.env)
    assert result.returncode == case.returncode, result.stderr
    assert_facts(case, result.facts)


def test_argv0_is_the_program_name(cli_wasm: Path) -> None:
    result = run_guest(cli_wasm, "args").check()
    assert result.facts["argv0"] == cli_wasm.name
    assert result.facts["argc"] == "0"


def test_stderr_is_separate_and_large_stdout_arrives_whole(cli_wasm: Path) -> None:
    size = 1 << 20
    result = run_guest(cli_wasm, "streams", str(size), stdin=b"").check()
    assert "stderr=hello from stderr" in result.stderr.splitlines()
    assert "stderr" not in result.facts
    assert result.facts["stdin_len"] == "0"
    payload = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    assert result.facts["big_sha256"] == hashlib.sha256(payload).hexdigest()
    assert payload.decode() in result.stdout.splitlines()


def test_random_differs_between_runs(cli_wasm: Path) -> None:
    first = run_guest(cli_wasm, "random").check().facts
    second = run_guest(cli_wasm, "random").check().facts
    for key in ("urandom_hex", "random_bytes_hex"):
        assert len(first[key]) == 64
        assert first[key] != second[key]
    # The random module is reseeded per instance, not frozen in the build snapshot.
    assert first["random_module_hex"] != second["random_module_hex"]


def test_fs_write_in_preopened_dir(cli_wasm: Path, tmp_path: Path) -> None:
    (tmp_path / "existing.txt").write_text("already here")
    result = run_guest(cli_wasm, "fs-write", "/data", dirs={tmp_path: "/data"}).check()
    assert result.facts == {
        "mkdir": "ok",
        "listdir": "a.txt,bin.dat",
        "stat_size": "25",
        "stat_isreg": "1",
        "stat_isdir": "1",
        "exists_after_rename": "0,1",
        "read_back": "hello fabric|second line|",
        "pwrite_read": "hello FABRIC|second line|",
        "truncated_size": "5",
        "walk": "b.txt,bin.dat,x/y/deep.txt",
        "mkdir_again": "EEXIST",
        "rmdir_nonempty": "ENOTEMPTY",
        "open_missing": "ENOENT",
        "final_listdir": "existing.txt,result.txt",
    }
    # The host sees what the guest left behind, and nothing else.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.txt", "result.txt"]
    assert (tmp_path / "result.txt").read_text() == "written by the guest\n"


def test_fs_read_sees_host_files(cli_wasm: Path, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 300
    (tmp_path / "blob.bin").write_bytes(blob)
    note = b"note\n"
    (tmp_path / "note.txt").write_bytes(note)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.txt").write_text("inner")
    result = run_guest(cli_wasm, "fs-read", "/data", dirs={tmp_path: "/data"}).check()
    assert result.facts == {
        "entries": "blob.bin,note.txt,sub",
        "file.blob.bin": f"{len(blob)}:{hashlib.sha256(blob).hexdigest()}",
        "file.note.txt": f"{len(note)}:{hashlib.sha256(note).hexdigest()}",
        "dir.sub": "inner.txt",
        "write_probe": "ok",
    }


def test_fs_escape_is_refused(cli_wasm: Path, tmp_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "inside.txt").write_text("inside")
    (tmp_path / "outside").write_text("secret")
    result = run_guest(cli_wasm, "fs-escape", "/data", dirs={inner: "/data"}).check()
    assert result.facts == {
        "dotdot": "EPERM",
        "dotdot_deep": "EPERM",
        "dotdot_inside": "opened",
        "absolute": "ENOENT",
        "listdir_root": "ENOENT",
    }
    assert sorted(p.name for p in inner.iterdir()) == ["inside.txt"]


def test_no_preopen_means_no_filesystem(cli_wasm: Path) -> None:
    result = run_guest(cli_wasm, "fs-escape", "/data", dirs={})
    # Without preopens even creating the probe directory fails: an uncaught
    # OSError, so the guest traps.
    assert result.returncode == TRAP_EXIT_CODE
    assert "FileNotFoundError" in result.stderr


def test_uncaught_exception_traps_after_flushed_output(cli_wasm: Path) -> None:
    result = run_guest(cli_wasm, "trap")
    assert result.returncode == TRAP_EXIT_CODE
    assert result.trapped
    assert result.facts == {"before_trap": "1"}
    assert "RuntimeError: deliberate failure" in result.stderr


def test_infinite_loop_is_interrupted(cli_wasm: Path) -> None:
    result = run_guest(cli_wasm, "loop", timeout="1s")
    assert result.returncode == TRAP_EXIT_CODE
    assert result.facts == {"looping": "1"}
    assert "interrupt" in result.stderr


def test_unknown_mode_exits_with_error(cli_wasm: Path) -> None:
    result = run_guest(cli_wasm, "no-such-mode")
    assert result.returncode == 1
    assert result.facts == {"error": "unknown mode 'no-such-mode'"}
