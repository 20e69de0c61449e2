"""benches.profile_loopback runs end to end (guest-to-guest loopback cost work starts there)."""

from __future__ import annotations

import re
import subprocess
import sys


def test_loopback_profile_reports_host_calls_per_round_trip() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "benches.profile_loopback", "--path", "rtt", "--rounds", "50",
         "--repeat", "1", "--top", "10"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "=== rtt: rtt 127.0.0.1 7 50" in p.stdout
    assert re.search(r"client timing, median of 1: [0-9.]+ us per round trip", p.stdout)
    calls = re.search(r"host calls per round trip \(service and client together\): ([0-9.]+)",
                      p.stdout)  # fmt: skip
    # each side reads and writes once per round trip, and waits in poll
    assert calls is not None and float(calls.group(1)) >= 6
    assert "streams#[method]output-stream.write" in p.stdout
    assert "poll#poll" in p.stdout
