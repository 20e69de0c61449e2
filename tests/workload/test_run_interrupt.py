"""Ctrl-C during a cold start of ``fabric run`` stops it without waiting for compilation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def uncompiled_copy(wasm: Path, target: Path) -> Path:
    """The same component with a fresh custom section: not in any compile cache."""
    name = b"fabric-test"
    body = _leb(len(name)) + name + os.urandom(16)
    target.write_bytes(wasm.read_bytes() + b"\x00" + _leb(len(body)) + body)
    return target


def test_interrupt_during_cold_start(job_guest: Path, tmp_path: Path) -> None:
    wasm = uncompiled_copy(job_guest, tmp_path / "job.wasm")
    manifest = tmp_path / "jobs.toml"
    manifest.write_text(
        f'[[workloads]]\nname = "jobs"\n[[workloads.components]]\nname = "job"\nwasm = "{wasm}"\n'
    )
    control = tmp_path / "control.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fabric.cli", "run", str(manifest)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=dict(os.environ, FABRIC_CONTROL=str(control)),
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline() == "fabric: starting jobs\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err == "fabric: interrupted while starting; stopped\n"
    assert not control.exists()  # never served
