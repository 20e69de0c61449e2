"""benches.report: JSON round trip, markdown table, PNG file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from benches.env import machine_info
from benches.harness import apply_baseline
from benches.model import (
    QUICK,
    ContenderResult,
    LatencyStats,
    LevelResult,
    ScenarioResult,
    SuiteResult,
)
from benches.report import format_ms, load_json, render_markdown, write_reports


def _level(c: int, p50: float, tput: float, *, mb: float | None = None) -> LevelResult:
    lat = LatencyStats(
        samples=100,
        min_ms=p50 / 2,
        mean_ms=p50 * 1.1,
        p50_ms=p50,
        p90_ms=p50 * 1.5,
        p99_ms=p50 * 3,
        max_ms=p50 * 5,
    )
    return LevelResult(
        concurrency=c, ops=100, wall_seconds=100 / tput, throughput=tput, latency=lat, mb_per_s=mb
    )


def _suite() -> SuiteResult:
    direct = ContenderResult(
        name="pg-direct-scram",
        group="postgres",
        description="connect | select | close",
        levels=[_level(1, 14.5, 69.0), _level(8, 72.0, 110.0)],
    )
    pool = ContenderResult(
        name="pg-asyncpg-pool",
        group="postgres",
        description="pool",
        levels=[_level(1, 0.26, 2636.0), LevelResult(concurrency=8, skipped="above limit (4)")],
    )
    bouncer = ContenderResult(
        name="pg-pgbouncer-tx",
        group="postgres",
        status="skipped",
        reason="pgbouncer not installed",
    )
    pg = ScenarioResult(
        name="pg-select1",
        title="PostgreSQL: SELECT 1 per invocation",
        description="desc",
        baseline="pg-direct-scram",
        levels=[1, 8],
        contenders=apply_baseline([direct, pool, bouncer], "pg-direct-scram"),
        duration_seconds=3.0,
    )
    bulk = ScenarioResult(
        name="loopback-bulk",
        title="bulk",
        description="bulk desc",
        baseline="tcp-loopback-bulk",
        levels=[1],
        contenders=[
            ContenderResult(
                name="tcp-loopback-bulk", group="loopback", levels=[_level(1, 1.2, 800.0, mb=838.9)]
            )
        ],
        duration_seconds=1.0,
    )
    return SuiteResult(
        started_at="2026-01-02T03:04:05Z",
        finished_at="2026-01-02T03:05:05Z",
        duration_seconds=60.0,
        profile=QUICK,
        machine=machine_info({"postgresql": "15.20 (private cluster)"}),
        scenarios=[pg, bulk],
        notes=["plug-in benches.fabric_x not loaded: ImportError()"],
    )


def test_format_ms_has_no_exponents() -> None:
    assert [format_ms(v) for v in (0.2634, 2.634, 26.34, 263.4, 12345.6)] == [
        "0.263",
        "2.63",
        "26.3",
        "263",
        "12,346",
    ]


def test_write_reports_produces_three_valid_files(tmp_path: Path) -> None:
    suite = _suite()
    files = write_reports(suite, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "results.json",
        "results.md",
        "results.png",
    ]

    # JSON: plain JSON that decodes back into the same Structs
    data = json.loads(Path(files.json).read_text())
    assert data["schema_version"] == 1
    assert data["machine"]["cpus"] >= 1
    assert data["scenarios"][0]["contenders"][1]["levels"][0]["speedup_p50"] == pytest.approx(
        14.5 / 0.26
    )
    assert load_json(Path(files.json)) == suite

    # PNG: signature, IHDR with a sensible size
    png = Path(files.png).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 800 and height >= 400
    assert len(png) > 20_000


def test_markdown_table(tmp_path: Path) -> None:
    text = render_markdown(_suite())
    assert text.startswith("# fabric benchmarks")
    assert "2026-01-02T03:04:05Z" in text
    assert "PostgreSQL 15.20" not in text and "postgresql: 15.20 (private cluster)" in text
    assert "note: plug-in benches.fabric_x not loaded" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| contender"))
    columns = header.count("|")
    rows = [line for line in lines if line.startswith("| `pg-")]
    assert len(rows) == 4
    assert all(row.count("|") - row.count("\\|") == columns for row in rows)
    pool_c1 = next(r for r in rows if r.startswith("| `pg-asyncpg-pool` | postgres | 1 |"))
    assert "| 0.260 |" in pool_c1 and "55.8x" in pool_c1
    assert any("skipped: above limit (4)" in r for r in rows)
    assert "- `pg-pgbouncer-tx`: skipped: pgbouncer not installed" in text
    bulk_header = [line for line in lines if line.startswith("| contender")][1]
    assert "MB/s" in bulk_header
    assert "| 839 |" in text


def test_png_with_no_results(tmp_path: Path) -> None:
    suite = _suite()
    empty = SuiteResult(
        started_at=suite.started_at,
        finished_at=suite.finished_at,
        duration_seconds=0.0,
        profile=suite.profile,
        machine=suite.machine,
        scenarios=[],
    )
    files = write_reports(empty, tmp_path)
    assert Path(files.png).read_bytes()[:4] == b"\x89PNG"
    assert "# fabric benchmarks" in Path(files.markdown).read_text()
