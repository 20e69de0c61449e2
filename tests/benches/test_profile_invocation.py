"""benches.profile_invocation runs end to end (it is how per-invocation cost work starts)."""

from __future__ import annotations

import re
import subprocess
import sys


def test_profile_script_reports_host_calls_per_invocation() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "benches.profile_invocation", "--path", "wat",
         "-n", "5", "--warmup", "1", "--top", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "=== wat: 5 invocations" in p.stdout
    calls = re.search(r"host calls per invocation: ([0-9.]+)", p.stdout)
    assert calls is not None and float(calls.group(1)) >= 9  # connect, write, reads...
    assert "tcp#[method]tcp-socket.start-connect" in p.stdout
