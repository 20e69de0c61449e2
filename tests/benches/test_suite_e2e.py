"""The whole suite on a tiny profile, with the real baselines and real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benches import run_suite
from benches.cli import main
from benches.model import Profile, SuiteResult
from benches.pgbouncer import find_pgbouncer
from benches.registry import default_registry

TINY = Profile(
    name="tiny",
    levels=(1, 4),
    slices=2,
    slice_seconds=0.1,
    warmup_seconds=0.02,
    max_ops=2_000,
    op_timeout=30,
)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[SuiteResult, Path]:
    out = tmp_path_factory.mktemp("bench") / "out"
    messages: list[str] = []
    # Baselines only: the fabric_* plug-ins have tests of their own.
    registry = default_registry(plugins=False)
    result = run_suite(TINY, out, None, registry=registry, progress=messages.append)
    assert any("pg-select1" in m for m in messages)
    return result, out


def test_all_scenarios_ran(suite: tuple[SuiteResult, Path]) -> None:
    result, _ = suite
    names = [s.name for s in result.scenarios]
    assert names == ["pg-select1", "mysql-select1", "loopback-rtt", "loopback-bulk"]
    assert result.profile == TINY
    assert result.machine.cpus >= 1
    assert "postgresql" in result.machine.servers
    assert "mariadb" in result.machine.servers


@pytest.mark.parametrize(
    ("scenario", "contenders"),
    [
        ("pg-select1", ["pg-direct-scram", "pg-asyncpg-pool"]),
        ("mysql-select1", ["mysql-direct", "mysql-aiomysql-pool"]),
        ("loopback-rtt", ["tcp-loopback"]),
        ("loopback-bulk", ["tcp-loopback-bulk"]),
    ],
)
def test_baselines_measured_sanely(
    suite: tuple[SuiteResult, Path], scenario: str, contenders: list[str]
) -> None:
    result, _ = suite
    found = result.scenario(scenario)
    assert found is not None
    for name in contenders:
        contender = found.contender(name)
        assert contender is not None, name
        assert contender.status == "ok", (name, contender.reason)
        assert [lv.concurrency for lv in contender.levels] == [1, 4]
        for level in contender.levels:
            assert level.ops > 0 and level.errors == 0, (name, level.first_error)
            assert level.throughput > 0
            assert level.latency is not None
            lat = level.latency
            assert 0 < lat.min_ms <= lat.p50_ms <= lat.p90_ms <= lat.p99_ms <= lat.max_ms
            assert level.speedup_p50 is not None and level.speedup_p50 > 0
            if name == found.baseline:
                assert level.speedup_p50 == 1.0 and level.speedup_throughput == 1.0
            if scenario == "loopback-bulk":
                assert level.mb_per_s is not None and level.mb_per_s > 0


def test_pgbouncer_contender(suite: tuple[SuiteResult, Path]) -> None:
    result, _ = suite
    pg = result.scenario("pg-select1")
    assert pg is not None
    bouncer = pg.contender("pg-pgbouncer-tx")
    assert bouncer is not None
    if find_pgbouncer() is None:
        assert (bouncer.status, bouncer.reason) == ("skipped", "pgbouncer not installed")
    else:
        assert bouncer.status == "ok", bouncer.reason
        assert all(lv.ops > 0 and lv.errors == 0 for lv in bouncer.levels)
        assert "pgbouncer" in result.machine.servers


def test_files_written(suite: tuple[SuiteResult, Path]) -> None:
    result, out = suite
    data = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in data["scenarios"]] == [s.name for s in result.scenarios]
    markdown = (out / "results.md").read_text()
    assert "| `pg-direct-scram` | postgres | 1 |" in markdown
    assert "| `mysql-aiomysql-pool` | mariadb | 4 |" in markdown
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "pg-select1" in out and "pg-pgbouncer-tx [postgres]" in out


def test_cli_unknown_scenario(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--quick", "--no-plugins", "--scenario", "nope", "--out", str(tmp_path)]) == 2
    assert "no scenario named 'nope'" in capsys.readouterr().err


def test_python_dash_m_benches(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    argv = [
        "-m",
        "benches",
        "--quick",
        "--no-plugins",
        "--levels",
        "1,2",
        "--scenario",
        "loopback-rtt",
    ]
    proc = subprocess.run(
        [sys.executable, *argv, "--out", str(out), "--quiet"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| `tcp-loopback` | loopback | 2 |" in proc.stdout
    assert f"results written to {out}" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md", "results.png"]
