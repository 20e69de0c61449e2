"""The front doors' counters as metric families (services/dbpool/metrics.py)."""

from __future__ import annotations

from services.dbpool.messages import ServerStats
from services.dbpool.metrics import server_metrics


def _families(stats: ServerStats) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in server_metrics(stats):
        for sample in family["samples"]:
            key = tuple(sorted(sample["labels"].items()))
            out.setdefault(family["name"], {})[key] = sample["value"]
    return out


def test_both_front_doors_are_labelled_families() -> None:
    stats = ServerStats(
        clients_connected=0,
        clients_total=0,
        clients_rejected=0,
        requests_in_flight=0,
        transactions_open=0,
        transactions_abandoned=0,
        requests={},
        errors={},
        databases={},
        mysql={
            "port": 3307,
            "clients_connected": 2,
            "clients_external": 1,
            "clients_total": 5,
            "clients_rejected": 1,
            "auth_failures": 3,
            "transactions_open": 1,
            "transactions_abandoned": 0,
            "prepared_statements": 4,
            "commands": {"query": 7},
            "errors": {"1045": 3},
        },
    )
    got = _families(stats)
    door = (("door", "mysql"),)
    assert got["dbpool_door_clients_connected"] == {door: 2.0}
    assert got["dbpool_door_auth_failures"] == {door: 3.0}
    assert got["dbpool_door_prepared_statements"] == {door: 4.0}
    assert got["dbpool_door_commands"] == {(("command", "query"), ("door", "mysql")): 7.0}
    assert got["dbpool_door_errors"] == {(("code", "1045"), ("door", "mysql")): 3.0}
    assert "dbpool_door_listeners" not in got and "dbpool_port" not in got
