"""benches.profile_invocation runs end to end (it is how per-invocation cost work starts)."""

from __future__ import annotations

import re
import subprocess
import sys


def _profile(*args: str) -> str:
    """Run the script with ``args``; its stdout, once it exited 0."""
    p = subprocess.run(
        [sys.executable, "-m", "benches.profile_invocation", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p.stdout


def test_profile_script_reports_host_calls_per_invocation() -> None:
    out = _profile("--path", "wat", "-n", "5", "--warmup", "1", "--top", "3")
    assert "=== wat: 5 invocations" in out
    calls = re.search(r"host calls per invocation: ([0-9.]+)", out)
    assert calls is not None and float(calls.group(1)) >= 9  # connect, write, reads...
    assert "tcp#[method]tcp-socket.start-connect" in out


def test_profile_script_times_rounds_without_the_profiler() -> None:
    out = _profile("--path", "tiny", "-n", "5", "--warmup", "1", "--top", "1", "--rounds", "3")
    rounds = re.search(
        r"process CPU per invocation in 3 rounds of 5: (\d+) (\d+) (\d+) µs \(median (\d+) µs\);"
        r" minor faults per invocation ([0-9.]+)",
        out,
    )
    assert rounds is not None, out[-2000:]
    assert int(rounds.group(4)) == sorted(int(rounds.group(i)) for i in (1, 2, 3))[1]
