"""The reliability suite end to end on its cheapest faults, against real servers.

``python -m benches.soak --quick`` with three faults (each in a child process,
as the command runs them), then the report is read back: its shape, and that
no acknowledged row was lost, nothing was duplicated, and every lease and
uncommitted transaction of a vanished client came back.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from benches.soak.model import SoakReport
from benches.soak.report import JSON_NAME, MARKDOWN_NAME, load_json
from benches.soak.runner import FAULTS, main
from benches.soak.sigterm import to_toml
from benches.soak.stack import count_rows
from fabric.workload import manifest_from_dict

CHEAP = ["client-drop", "backend-kill", "crash-loop"]


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> tuple[SoakReport, Path]:
    out = tmp_path_factory.mktemp("soak") / "out"
    argv = ["--quick", "--out", str(out)]
    for name in CHEAP:
        argv += ["--fault", name]
    assert main(argv) == 0
    return load_json(out / JSON_NAME), out


def test_report_shape(soak: tuple[SoakReport, Path]) -> None:
    report, out = soak
    assert report.profile.name == "quick"
    assert [f.name for f in report.faults] == CHEAP
    assert "postgresql" in " ".join(report.machine)
    markdown = (out / MARKDOWN_NAME).read_text()
    assert "| fault | outcome |" in markdown
    for fault in report.faults:
        assert f"`{fault.name}`" in markdown
        assert fault.title == FAULTS[fault.name][0]
        assert fault.outcome in ("held", "failed"), fault.problems
        assert fault.invocations >= fault.acknowledged > 0
        assert fault.acknowledged + fault.failed == fault.invocations
        assert sum(r.acknowledged for r in fault.rows) == fault.acknowledged
        assert {r.database for r in fault.rows} >= {"pg"}
        assert fault.rss_peak_mb is not None and fault.rss_before_mb is not None
        assert fault.rss_peak_mb >= fault.rss_before_mb > 0


def test_no_acknowledged_row_lost(soak: tuple[SoakReport, Path]) -> None:
    report, _ = soak
    for fault in report.faults:
        assert fault.host_alive, fault.name
        assert fault.lost == 0 and fault.duplicated == 0, (fault.name, fault.rows)
        for rows in fault.rows:
            assert rows.phantom == 0, (fault.name, rows)
            assert rows.present == rows.acknowledged + rows.unacknowledged_present
        assert fault.leases_leaked == 0 and fault.transactions_open == 0, fault.name
        assert fault.recovery_seconds is not None, fault.name


def test_vanished_clients_rolled_back(soak: tuple[SoakReport, Path]) -> None:
    report, _ = soak
    drop = report.fault("client-drop")
    assert drop is not None
    assert drop.details["rows_written_then_dropped"] == report.profile.dropped_clients
    assert drop.details["transactions_abandoned"] == report.profile.dropped_clients
    kill = report.fault("backend-kill")
    assert kill is not None
    assert isinstance(kill.details["backends_killed"], int)
    assert kill.details["backends_killed"] > 0
    loop = report.fault("crash-loop")
    assert loop is not None
    assert loop.details["crasher_state"] == "failed"
    assert loop.details["rows_written_by_crashed_instances"] == loop.details["crasher_exits"]


def test_count_rows() -> None:
    lost, dup, unacked, phantom = count_rows(
        [1, 2, 2, 4, 9], acknowledged={1, 2, 3}, issued={1, 2, 3, 4}, must_not_exist={9}
    )
    assert (lost, dup, unacked, phantom) == (1, 1, 1, 1)


def test_manifest_as_toml() -> None:
    raw = {
        "grace": "5s",
        "workloads": [
            {
                "name": "soak",
                "services": [
                    {
                        "name": "svc",
                        "native": "mod:Cls",
                        "ports": [7000],
                        "config": {"a b": 'q"uote', "n": 1.5, "ok": True, "xs": [1, 2]},
                    }
                ],
            }
        ],
    }
    text = to_toml(raw)
    assert tomllib.loads(text) == raw
    manifest = manifest_from_dict(tomllib.loads(text), path="<t>", base_dir=".")
    assert manifest.workloads[0].services[0].config["a b"] == 'q"uote'
