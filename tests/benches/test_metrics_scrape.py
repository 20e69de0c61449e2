"""``python -m benches.metrics_scrape`` runs and reports what it measured."""

from __future__ import annotations

import json
import subprocess
import sys


def test_metrics_scrape_reports_size_and_time() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benches.metrics_scrape", "--components", "2", "--scrapes", "3"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    result = json.loads(out)
    assert result["components"] == 2
    assert result["samples"] > 100 and result["bytes"] > 10_000
    assert result["ms_per_scrape_median"] > 0
