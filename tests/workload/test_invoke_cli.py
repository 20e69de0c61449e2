"""``fabric invoke`` of a command, as a user runs it: output streamed, exit code kept."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_fabric_run import fabric


@pytest.fixture
def command_fabric(cli_guest: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    manifest = tmp_path / "tools.toml"
    manifest.write_text(
        f'[[workloads]]\nname = "tools"\n[[workloads.components]]\nname = "cli"\n'
        f'wasm = "{cli_guest}"\ntimeout = "3s"\n'
    )
    env = dict(os.environ, FABRIC_CONTROL=str(tmp_path / "control.sock"))
    log = tmp_path / "fabric.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fabric.cli", "run", str(manifest)],
            stdout=sink, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "control socket" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "fabric run did not come up"
            time.sleep(0.1)
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_invoke_a_command(command_fabric: dict[str, str]) -> None:
    p = fabric("invoke", "tools", "cli", "run", '["streams", "100000"]', env=command_fabric)
    assert p.returncode == 0, p.stderr
    assert p.stderr == "stderr=hello from stderr\n"
    assert p.stdout.startswith("stdout=hello from stdout\nstdin_len=0\n")
    assert ("0123456789abcdef" * 6250) in p.stdout

    p = fabric("invoke", "tools", "cli", "run", '["exit", "3"]', env=command_fabric)
    assert (p.returncode, p.stdout) == (1, "exiting=3\n")  # WASI 0.2 exit: success or 1

    # output written before a deadline stops the guest still reaches the user
    p = fabric("invoke", "tools", "cli", "run", '["loop"]', env=command_fabric)
    assert p.returncode == 2
    assert p.stdout == "looping=1\n"
    assert p.stderr.startswith("fabric invoke: DeadlineExceeded: ")
