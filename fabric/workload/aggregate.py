"""One status report out of the reports of several workers (sans-IO).

``fabric run --workers N`` answers ``fabric status`` with the workers'
reports added up, workload by workload, so tools reading a single process's
report keep working:

* components: counters (``in_flight``, ``waiting``, ``invocations``,
  ``errors``, ``rejected``), ``concurrency`` and ``queue`` are summed (the
  whole fabric's capacity); latency counts are summed and each percentile is
  the worst worker's (percentiles cannot be added); latency histograms and
  instance pools are summed;
* services: ``restarts`` and ``exits`` are summed, ``state`` is the common
  state, or the least healthy one when the workers differ, ``stats`` holds
  each worker's stats under ``"worker I"``, and each metric family a service
  offers holds every worker's samples, told apart by a ``worker`` label;
* ingress rules: counters are summed per virtual port (the workers share
  the host port).

Each worker's own report stays available in ``StatusReport.workers``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from fabric.net import IngressStatistics

from .status import (
    ComponentStatus,
    Histogram,
    LatencySummary,
    MetricFamily,
    MetricSample,
    PoolStatus,
    ServiceStatus,
    StatusReport,
    WorkloadStatus,
)

__all__ = ["merge_workloads"]

#: least healthy first: the state an aggregated service shows when workers differ
_SEVERITY = ("failed", "backing-off", "starting", "stopping", "stopped", "ready")


def merge_workloads(reports: Sequence[tuple[int, StatusReport]]) -> tuple[WorkloadStatus, ...]:
    """The workloads of ``(worker index, report)`` pairs, added up by name (first-seen order)."""
    order: list[str] = []
    by_name: dict[str, list[tuple[int, WorkloadStatus]]] = {}
    for index, report in reports:
        for wl in report.workloads:
            if wl.name not in by_name:
                order.append(wl.name)
                by_name[wl.name] = []
            by_name[wl.name].append((index, wl))
    return tuple(_workload(name, by_name[name]) for name in order)


def _workload(name: str, parts: list[tuple[int, WorkloadStatus]]) -> WorkloadStatus:
    services = _grouped((i, s) for i, wl in parts for s in wl.services)
    components = _grouped((i, c) for i, wl in parts for c in wl.components)
    return WorkloadStatus(
        name=name,
        services=tuple(_service(group) for group in services),
        components=tuple(_component([c for _, c in group]) for group in components),
        ingress=_ingress([r for _, wl in parts for r in wl.ingress]),
    )


def _ingress(rules: list[IngressStatistics]) -> tuple[IngressStatistics, ...]:
    by_port: dict[int, IngressStatistics] = {}
    for r in rules:
        seen = by_port.get(r.port)
        by_port[r.port] = (
            r
            if seen is None
            else msgspec.structs.replace(
                seen,
                active=seen.active + r.active,
                max_connections=seen.max_connections + r.max_connections,
                connections=seen.connections + r.connections,
                direct=seen.direct + r.direct,
                refused=seen.refused + r.refused,
                over_limit=seen.over_limit + r.over_limit,
            )
        )
    return tuple(by_port.values())


def _grouped(items: Iterable[tuple[int, Any]]) -> list[list[tuple[int, Any]]]:
    groups: dict[str, list[tuple[int, Any]]] = {}
    for index, item in items:
        groups.setdefault(item.name, []).append((index, item))
    return list(groups.values())


def _service(group: list[tuple[int, ServiceStatus]]) -> ServiceStatus:
    first = group[0][1]
    states = [s.state for _, s in group]
    state = states[0] if len(set(states)) == 1 else min(states, key=_severity)
    errors = [s.last_error for _, s in group if s.last_error]
    reasons = [s.failure_reason for _, s in group if s.failure_reason]
    attempts = [s.next_attempt_at for _, s in group if s.next_attempt_at is not None]
    stats = {f"worker {i}": s.stats for i, s in group if s.stats is not None}
    return ServiceStatus(
        name=first.name,
        state=state,
        since=max(s.since for _, s in group),
        restarts=sum(s.restarts for _, s in group),
        exits=sum(s.exits for _, s in group),
        last_error=errors[0] if errors else None,
        failure_reason=reasons[0] if reasons else None,
        next_attempt_at=min(attempts) if attempts else None,
        kind=first.kind,
        ports=first.ports,
        stats=stats or None,
        metrics=_families(group),
    )


def _families(group: list[tuple[int, ServiceStatus]]) -> tuple[MetricFamily, ...]:
    families: dict[str, MetricFamily] = {}
    samples: dict[str, list[MetricSample]] = {}
    for index, status in group:
        for family in status.metrics:
            families.setdefault(family.name, family)
            samples.setdefault(family.name, []).extend(
                MetricSample(value=s.value, labels={**s.labels, "worker": str(index)})
                for s in family.samples
            )
    return tuple(
        MetricFamily(name=name, kind=f.kind, help=f.help, samples=tuple(samples[name]))
        for name, f in families.items()
    )


def _severity(state: str) -> int:
    return _SEVERITY.index(state) if state in _SEVERITY else 0


def _component(group: list[ComponentStatus]) -> ComponentStatus:
    first = group[0]
    pools = [c.pool for c in group if c.pool is not None]
    return ComponentStatus(
        name=first.name,
        concurrency=sum(c.concurrency for c in group),
        queue=sum(c.queue for c in group),
        in_flight=sum(c.in_flight for c in group),
        waiting=sum(c.waiting for c in group),
        invocations=sum(c.invocations for c in group),
        errors=sum(c.errors for c in group),
        rejected=sum(c.rejected for c in group),
        latency=_latency([c.latency for c in group]),
        wait=_latency([c.wait for c in group]),
        histogram=_histogram([c.histogram for c in group if c.histogram is not None]),
        pool=_pool(pools) if pools else None,
    )


def _histogram(parts: list[Histogram]) -> Histogram | None:
    """The sum of histograms with the same bounds (None if there are none)."""
    if not parts:
        return None
    bounds = parts[0].bounds
    same = [h for h in parts if h.bounds == bounds]
    return Histogram(
        bounds=bounds,
        counts=tuple(sum(counts) for counts in zip(*(h.counts for h in same), strict=True)),
        sum=sum(h.sum for h in same),
    )


def _worst(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _latency(parts: list[LatencySummary]) -> LatencySummary:
    return LatencySummary(
        count=sum(p.count for p in parts),
        p50=_worst(p.p50 for p in parts),
        p99=_worst(p.p99 for p in parts),
        max=_worst(p.max for p in parts),
    )


def _pool(parts: list[PoolStatus]) -> PoolStatus:
    reasons: dict[str, int] = {}
    for p in parts:
        for key, count in p.reasons.items():
            reasons[key] = reasons.get(key, 0) + count
    return PoolStatus(
        max_invocations=parts[0].max_invocations,
        pool_size=sum(p.pool_size for p in parts),
        idle=parts[0].idle,
        warm=sum(p.warm for p in parts),
        busy=sum(p.busy for p in parts),
        started=sum(p.started for p in parts),
        reused=sum(p.reused for p in parts),
        retired=sum(p.retired for p in parts),
        reasons=reasons,
    )
