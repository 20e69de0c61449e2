"""``fabric exec`` end to end, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.guestlib import wat_guest


def fabric(
    *args: str, stdin: bytes = b"", timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "fabric.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def test_exec_streams_stdio_and_exit_code(cli_guest: Path) -> None:
    p = fabric("exec", str(cli_guest), "--", "streams", stdin=b"abc")
    assert p.returncode == 0, p.stderr
    assert b"stdout=hello from stdout" in p.stdout
    assert b"stdin_len=3" in p.stdout
    assert b"stderr=hello from stderr" in p.stderr
    assert fabric("exec", str(cli_guest), "--", "exit", "4").returncode == 1


def test_exec_env_and_args(cli_guest: Path) -> None:
    p = fabric("exec", str(cli_guest), "--env", "FOO=bar", "--", "env")
    assert p.returncode == 0, p.stderr
    assert b"env.FOO=bar" in p.stdout


def test_exec_preopened_dir(cli_guest: Path, tmp_path: Path) -> None:
    p = fabric("exec", str(cli_guest), "--dir", f"{tmp_path}::/data", "--", "fs-write", "/data")
    assert p.returncode == 0, p.stderr
    assert any(tmp_path.iterdir()), "the guest wrote into the preopened host directory"


def test_exec_timeout_stops_a_looping_guest(cli_guest: Path) -> None:
    p = fabric("exec", str(cli_guest), "--timeout", "1", "--", "loop")
    assert p.returncode == 124
    assert b"deadline" in p.stderr


def test_exec_bad_input_is_one_line(tmp_path: Path) -> None:
    for target, needle in (
        (str(tmp_path / "missing.wasm"), b"no such file"),
        (__file__, b"not a WebAssembly binary"),
        (str(wat_guest("spin")), b"does not export wasi:cli/run"),
    ):
        p = fabric("exec", target)
        assert p.returncode == 2, p.stderr
        assert needle in p.stderr
        assert b"Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


def test_exec_smallest_component(tmp_path: Path) -> None:
    assert fabric("exec", str(wat_guest("tiny"))).returncode == 0
