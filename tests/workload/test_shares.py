"""Worker slots, shares of a total, and the status of several workers added up (no loop)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from fabric.workload.aggregate import merge_workloads
from fabric.workload.health import not_ready
from fabric.workload.shares import WorkerSlot, config_for_worker, share
from fabric.workload.status import (
    ComponentStatus,
    Histogram,
    LatencySummary,
    MetricFamily,
    MetricSample,
    PoolStatus,
    ServiceStatus,
    StatusReport,
    WorkerStatus,
    WorkloadStatus,
)
from services.dbpool.service import DbPoolService


def test_slots_parse_and_refuse_impossible_places() -> None:
    assert WorkerSlot.parse("1/2") == WorkerSlot(1, 2)
    assert str(WorkerSlot(0, 3)) == "0/3"
    assert not WorkerSlot().replicated and WorkerSlot(0, 2).replicated
    for bad in ("2/2", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError):
            WorkerSlot.parse(bad)


def test_share_adds_up_and_differs_by_at_most_one() -> None:
    for total in range(0, 30):
        for count in range(1, 7):
            parts = [share(total, WorkerSlot(i, count)) for i in range(count)]
            assert sum(parts) == total
            assert max(parts) - min(parts) <= 1
            assert parts == sorted(parts, reverse=True)  # the first workers get the extra


class Counted:
    calls: ClassVar[list[WorkerSlot]] = []

    @classmethod
    def for_worker(cls, config: dict[str, Any], slot: WorkerSlot) -> dict[str, Any]:
        cls.calls.append(slot)
        return {**config, "part": slot.index}


def test_config_for_worker_calls_the_hook_only_with_several_workers() -> None:
    config = {"a": [1]}
    alone = config_for_worker(Counted, config, WorkerSlot())
    assert alone == config and alone is not config and Counted.calls == []
    assert config_for_worker(Counted, config, WorkerSlot(1, 2)) == {"a": [1], "part": 1}
    assert config_for_worker(object, config, WorkerSlot(1, 2)) == config  # no hook: replicated


def test_dbpool_splits_every_pool_between_workers() -> None:
    config = {
        "port": 7000,
        "databases": {
            "pg": {"kind": "postgres", "max_size": 5, "min_size": 3, "application_name": "x"},
            "my": {"kind": "mysql"},  # defaults: min 1, max 10
        },
    }
    parts = [DbPoolService.for_worker(config, WorkerSlot(i, 2)) for i in range(2)]
    assert [p["databases"]["pg"]["max_size"] for p in parts] == [3, 2]
    assert [p["databases"]["pg"]["min_size"] for p in parts] == [2, 1]
    assert [p["databases"]["my"]["max_size"] for p in parts] == [5, 5]
    assert [p["databases"]["my"]["min_size"] for p in parts] == [1, 0]
    assert all(p["port"] == 7000 and p["databases"]["pg"]["application_name"] == "x" for p in parts)
    DbPoolService(parts[1])  # each part is a valid config
    with pytest.raises(ValueError, match=r"databases\.pg: max_size 5 is the total across 6"):
        DbPoolService.for_worker(config, WorkerSlot(0, 6))


def _report(state: str, invocations: int, p99: float, stats: Any) -> StatusReport:
    return StatusReport(
        workloads=(
            WorkloadStatus(
                name="w",
                services=(
                    ServiceStatus(
                        name="db",
                        state=state,
                        since=1.0,
                        restarts=1,
                        stats=stats,
                        metrics=(
                            MetricFamily(
                                name="db_in_use",
                                kind="gauge",
                                samples=(MetricSample(value=invocations, labels={"db": "pg"}),),
                            ),
                        ),
                    ),
                ),
                components=(
                    ComponentStatus(
                        name="c",
                        concurrency=16,
                        queue=64,
                        invocations=invocations,
                        errors=1,
                        latency=LatencySummary(count=invocations, p50=p99 / 2, p99=p99),
                        histogram=Histogram(bounds=(0.1, 1.0), counts=(invocations, 1, 0), sum=2.0),
                        pool=PoolStatus(
                            max_invocations=10, pool_size=2, idle=1.0, reused=3, reasons={"trap": 1}
                        ),
                    ),
                ),
            ),
        )
    )


def test_status_of_workers_adds_up() -> None:
    (wl,) = merge_workloads(
        [(0, _report("ready", 5, 0.010, {"n": 0})), (1, _report("backing-off", 7, 0.030, None))]
    )
    (service,) = wl.services
    assert service.state == "backing-off"  # the least healthy worker shows
    assert service.restarts == 2
    assert service.stats == {"worker 0": {"n": 0}}
    (component,) = wl.components
    assert (component.invocations, component.errors, component.concurrency) == (12, 2, 32)
    assert component.latency.count == 12 and component.latency.p99 == 0.030
    assert component.pool is not None
    assert (component.pool.pool_size, component.pool.reused) == (4, 6)
    assert component.pool.reasons == {"trap": 2}
    assert component.histogram == Histogram(bounds=(0.1, 1.0), counts=(12, 2, 0), sum=4.0)
    (family,) = service.metrics
    assert family.name == "db_in_use"
    assert [(s.value, s.labels) for s in family.samples] == [
        (5, {"db": "pg", "worker": "0"}),
        (7, {"db": "pg", "worker": "1"}),
    ]


def test_not_ready_while_no_worker_is() -> None:
    def report(*states: str) -> StatusReport:
        workers = tuple(
            WorkerStatus(index=i, state=state, since=0.0) for i, state in enumerate(states)
        )
        return StatusReport(started_at=1.0, workers=workers)

    assert not_ready(report("ready", "backing-off")) == []
    assert not_ready(report("backing-off", "failed")) == [
        "no worker is ready (worker 0 is backing-off, worker 1 is failed)"
    ]
