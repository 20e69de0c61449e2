"""``fabric exec`` end to end, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


def test_exec_impossible_options_are_one_line(cli_guest: Path) -> None:
    guest = str(cli_guest)
    for args, expected in (
        (
            ("--timeout", "nan"),
            b"argument --timeout: expected a number of seconds above 0 and at most 31622400, "
            b"got 'nan'",
        ),
        (("--timeout", "-1"), b"got '-1'"),
        (("--timeout", "inf"), b"got 'inf'"),
        (("--max-memory", "999999TiB"), b"--max-memory '999999TiB': expected at most 64GiB"),
        (("--service", '"abc'), b"""--service '"abc': No closing quotation"""),
        (("--service", ""), b"--service '': expected a component path and its arguments"),
        (("--publish", "99999:80"), b"--publish '99999:80': expected HOSTPORT:VPORT"),
        (("--egress", "x:1=y:0"), b"--egress 'x:1=y:0': expected DEST:PORT=HOST:PORT"),
    ):
        p = fabric("exec", *args, guest)
        assert p.returncode == 2, (args, p.stderr)
        assert expected in p.stderr, (args, p.stderr)
        assert b"Traceback" not in p.stderr and b"never awaited" not in p.stderr
        assert p.stdout == b""


def test_exec_publish_onto_a_port_in_use(cli_guest: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = fabric("exec", "--publish", f"{port}:80", str(cli_guest))
    assert p.returncode == 2
    assert p.stderr.startswith(f"fabric exec: --publish {port}:80: cannot listen: ".encode())
    assert b"address already in use" in p.stderr
    assert len(p.stderr.splitlines()) == 1


def test_exec_directory_or_device_as_component(tmp_path: Path) -> None:
    p = fabric("exec", str(tmp_path))
    assert p.returncode == 2
    assert p.stderr == f"fabric exec: {tmp_path} is a directory, not a component file\n".encode()
    p = fabric("exec", "/dev/zero")
    assert p.returncode == 2
    assert p.stderr == (
        b"fabric exec: /dev/zero is not a regular file (a device, pipe or socket), "
        b"not a component file\n"
    )


def test_nul_bytes_are_refused_at_the_edge(
    cli_guest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fabric.cli import main

    for argv, expected in (
        (["exec", "--env", "A\0B=c", str(cli_guest)], "--env 'A\\x00B=c': contains a NUL byte"),
        (["exec", "--env", "A=b\0", str(cli_guest)], "--env 'A=b\\x00': contains a NUL byte"),
        (["exec", str(cli_guest), "--", "x\0y"], "argument 'x\\x00y': contains a NUL byte"),
    ):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert err == f"fabric exec: {expected}\n"
        assert out == ""
