"""Status snapshots: what ``fabric status`` shows, as frozen msgspec Structs.

Times are seconds.  ``since`` and ``next_attempt_at`` are wall-clock UNIX
timestamps (``time.time()``) so that a client can print "ready for 2m";
latencies are durations in seconds.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from fabric.net import IngressStatistics

__all__ = [
    "LATENCY_BOUNDS",
    "ComponentStatus",
    "Histogram",
    "LatencySummary",
    "MetricFamily",
    "MetricSample",
    "PoolStatus",
    "ServiceStatus",
    "StatusReport",
    "SupervisorStats",
    "WorkerStatus",
    "WorkloadStatus",
]


class MetricSample(msgspec.Struct, frozen=True, kw_only=True):
    """One value of a metric family, with the labels that set it apart."""

    value: float
    labels: dict[str, str] = {}


class MetricFamily(msgspec.Struct, frozen=True, kw_only=True):
    """Metrics a native service offers (its optional ``metrics()`` method, docs/metrics.md).

    ``name`` is exposed as ``fabric_<name>`` with the labels ``workload`` and
    ``service`` added; a counter's name carries no ``_total`` (the exposition adds it).
    """

    name: str
    kind: Literal["counter", "gauge"]
    help: str = ""
    samples: tuple[MetricSample, ...] = ()


class ServiceStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One supervised service."""

    name: str
    state: str  # starting | ready | backing-off | failed | stopping | stopped
    since: float
    restarts: int = 0
    exits: int = 0
    last_error: str | None = None
    failure_reason: str | None = None
    next_attempt_at: float | None = None
    kind: str = ""  # "native" | "wasm" | "" (unknown)
    ports: tuple[int, ...] = ()
    stats: Any = None  # whatever the service published (builtins), or None
    metrics: tuple[MetricFamily, ...] = ()  # what its ``metrics()`` offers (native services)


class SupervisorStats(msgspec.Struct, frozen=True, kw_only=True):
    services: tuple[ServiceStatus, ...]
    running: bool


class LatencySummary(msgspec.Struct, frozen=True, kw_only=True):
    """Percentiles over the most recent samples (``count`` of them)."""

    count: int = 0
    p50: float | None = None
    p99: float | None = None
    max: float | None = None


#: Upper bounds (seconds) of the invocation latency histogram's buckets.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
)  # fmt: skip


class Histogram(msgspec.Struct, frozen=True, kw_only=True):
    """Every observation since start, counted per bucket (not cumulative).

    ``counts[i]`` counts values ``<= bounds[i]`` and above the previous bound;
    the last entry (``len(bounds)``) counts the values above every bound.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)


class PoolStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The warm instances of a component with ``reuse`` (``fabric.workload.reuse``)."""

    max_invocations: int
    pool_size: int
    idle: float  # seconds a warm instance may wait before it is closed
    warm: int = 0  # instances waiting for their next invocation
    busy: int = 0  # instances running an invocation
    started: int = 0  # instances created
    reused: int = 0  # invocations that ran in a warm instance
    retired: int = 0  # instances closed
    reasons: dict[str, int] = {}  # retirements by reason (trap, deadline, exit, idle, ...)


class ComponentStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One component's admission counters and latencies."""

    name: str
    concurrency: int
    queue: int
    in_flight: int = 0
    waiting: int = 0
    invocations: int = 0  # admitted invocations that finished (ok or error)
    errors: int = 0
    rejected: int = 0  # Overloaded
    latency: LatencySummary = LatencySummary()  # arrival to finish, including the wait
    wait: LatencySummary = LatencySummary()  # arrival to admission
    #: arrival to finish of every admitted invocation since start (LATENCY_BOUNDS)
    histogram: Histogram | None = None
    pool: PoolStatus | None = None  # with ``reuse``: the instance pool


class WorkloadStatus(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    services: tuple[ServiceStatus, ...] = ()
    components: tuple[ComponentStatus, ...] = ()
    ingress: tuple[IngressStatistics, ...] = ()  # one per ingress rule (docs/network.md)


class StatusReport(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to ``fabric status``.

    From ``fabric run --workers N`` (N > 1), ``workloads`` adds up the
    workers' reports (``fabric.workload.aggregate``) and ``workers`` holds
    each worker's own; a single process leaves ``workers`` empty.
    """

    manifest: str = ""
    pid: int = 0
    started_at: float = 0.0
    draining: bool = False
    workloads: tuple[WorkloadStatus, ...] = ()
    workers: tuple[WorkerStatus, ...] = ()
    #: component instances alive (every workload's), and the most the engine
    #: allows at once (``max_instances``; 0: no bound).  Summed over workers.
    instances: int = 0
    instance_limit: int = 0


class WorkerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One worker process of ``fabric run --workers N``, as its parent sees it."""

    index: int
    pid: int | None = None  # None while no process runs (backing off, failed, stopped)
    state: str  # starting | ready | backing-off | failed | stopping | stopped
    since: float  # wall-clock time of the last change of state
    restarts: int = 0
    exits: int = 0
    last_exit: str | None = None  # "exited with status 3", "killed by SIGKILL"
    next_attempt_at: float | None = None  # wall clock, while backing off
    in_flight: int = 0  # invocations the parent routed to it that have not finished
    routed: int = 0  # invocations the parent routed to it
    lost: int = 0  # invocations that failed because the process died under them
    report: StatusReport | None = None  # the worker's own report, when it answered
    error: str | None = None  # why ``report`` is missing
