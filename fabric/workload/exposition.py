"""Status reports as Prometheus / OpenMetrics metric families (docs/metrics.md).

`FabricCollector` is a ``prometheus_client`` custom collector: every scrape
asks its source for a fresh `StatusReport` (what ``fabric status`` shows)
and turns it into metric families, so nothing is counted a second time on
the invocation path; the counters, the latency histogram and the pools'
numbers are the ones the workload layer keeps anyway.  The families:

* ``fabric_ready``, ``fabric_draining``, ``fabric_start_time_seconds``;
* per component (labels ``workload``, ``component``): invocations by outcome,
  in flight, queued, the limits, the latency histogram since start and
  quantiles over the most recent invocations; with ``reuse``, the instance
  pool (warm, busy, started, reused, retired by reason);
* per service (labels ``workload``, ``service``, ``kind``): up, state,
  restarts, exits;
* what native services offer through their optional ``metrics()`` method,
  named ``fabric_<name>`` with ``workload`` and ``service`` added to their
  labels; a service without one but with published stats gets its numeric
  values as the untyped ``fabric_service_stat{stat="a.b"}``.

`render(registry, accept)` encodes for the scraper's ``Accept`` header (the
Prometheus text format, or OpenMetrics when asked for).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from .health import not_ready
from .lifecycle import State
from .reuse import REASONS
from .status import ComponentStatus, MetricFamily, ServiceStatus, StatusReport

__all__ = ["MAX_STAT_VALUES", "FabricCollector", "metrics_registry", "render"]

_log = logging.getLogger("fabric.workload.metrics")

#: numeric values of one service's published stats exposed as fabric_service_stat
MAX_STAT_VALUES = 1000
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_COMPONENT = ["workload", "component"]
_SERVICE = ["workload", "service", "kind"]
_QUANTILES = (("0.5", "p50"), ("0.99", "p99"), ("1", "max"))


class FabricCollector:
    """A ``prometheus_client`` collector reading ``source()`` at every scrape."""

    def __init__(self, source: Callable[[], StatusReport]) -> None:
        self._source = source
        self._warned: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        report = self._source()
        yield from _fabric(report)
        components = [(w.name, c) for w in report.workloads for c in w.components]
        yield from _components(components)
        yield from _pools([(w, c) for w, c in components if c.pool is not None])
        services = [(w.name, s) for w in report.workloads for s in w.services]
        yield from _services(services)
        yield from self._offered(services)

    def _offered(self, services: list[tuple[str, ServiceStatus]]) -> Iterator[Metric]:
        """The families services offer, merged by name across services, then the
        untyped stats of services that offer none."""
        families: dict[str, Metric] = {}
        for workload, service in services:
            for family in service.metrics:
                self._add_offered(families, workload, service.name, family)
        yield from families.values()
        stat = GaugeMetricFamily(
            "fabric_service_stat",
            "A numeric value a native service publishes in its status, by path "
            "(services that offer no metrics() of their own)",
            labels=["workload", "service", "stat"],
        )
        for workload, service in services:
            if service.metrics or service.stats is None:
                continue
            for path, value in _numbers(service.stats, MAX_STAT_VALUES):
                stat.add_metric([workload, service.name, path], value)
        if stat.samples:
            yield stat

    def _add_offered(
        self, families: dict[str, Metric], workload: str, service: str, family: MetricFamily
    ) -> None:
        base = family.name.removesuffix("_total") if family.kind == "counter" else family.name
        name = f"fabric_{base}"
        problem = None
        if not _METRIC_NAME.fullmatch(base) or name in _OWN:
            problem = f"metric name {family.name!r} is not usable"
        elif name in families and families[name].type != family.kind:
            problem = f"{name} is also offered as a {families[name].type}"
        if problem is not None:
            self._warn(f"{workload}/{service}: {problem}; skipped")
            return
        metric = families.get(name)
        if metric is None:
            metric = families[name] = Metric(name, family.help or name, family.kind)
        sample_name = f"{name}_total" if family.kind == "counter" else name
        for sample in family.samples:
            labels = {"workload": workload, "service": service}
            bad = [
                k
                for k in sample.labels
                if not _LABEL_NAME.fullmatch(k) or k.startswith("__") or k in labels
            ]
            if bad:
                self._warn(f"{workload}/{service}: {name}: labels {bad} refused; sample skipped")
                continue
            labels.update(sample.labels)
            metric.add_sample(sample_name, labels, float(sample.value))

    def _warn(self, message: str) -> None:
        if message not in self._warned and len(self._warned) < 100:
            self._warned.add(message)
            _log.warning("metrics: %s", message)


def _fabric(report: StatusReport) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "fabric_ready",
        "1 when every workload has started and every service is ready (what /readyz says)",
        value=0 if not_ready(report) else 1,
    )
    yield GaugeMetricFamily(
        "fabric_draining", "1 while the fabric shuts down", value=int(report.draining)
    )
    yield GaugeMetricFamily(
        "fabric_start_time_seconds",
        "When every workload had started (UNIX time; 0 while starting)",
        value=report.started_at,
    )


def _components(components: list[tuple[str, ComponentStatus]]) -> Iterator[Metric]:
    invocations = CounterMetricFamily(
        "fabric_component_invocations",
        "Invocations by outcome: ok returned (any exit code), error raised (trap, deadline, "
        "cancellation, host error), rejected were refused (concurrency limit and queue full)",
        labels=[*_COMPONENT, "outcome"],
    )
    in_flight = _gauge("component_in_flight", "Invocations running now")
    queued = _gauge("component_queued", "Invocations waiting for a slot now")
    limit = _gauge("component_concurrency", "The concurrency limit (concurrency =)")
    capacity = _gauge("component_queue_capacity", "The wait queue's capacity (queue =)")
    latency = HistogramMetricFamily(
        "fabric_component_latency_seconds",
        "Arrival to finish of every admitted invocation since start, waiting included",
        labels=_COMPONENT,
    )
    recent = _gauge(
        "component_latency_recent_seconds",
        "Latency quantiles (0.5, 0.99, 1 = max) over the most recent 1024 invocations",
        "quantile",
    )
    wait = _gauge(
        "component_wait_recent_seconds",
        "Wait-for-a-slot quantiles (0.5, 0.99, 1 = max) over the most recent 1024 invocations",
        "quantile",
    )
    for workload, c in components:
        key = [workload, c.name]
        invocations.add_metric([*key, "ok"], c.invocations - c.errors)
        invocations.add_metric([*key, "error"], c.errors)
        invocations.add_metric([*key, "rejected"], c.rejected)
        in_flight.add_metric(key, c.in_flight)
        queued.add_metric(key, c.waiting)
        limit.add_metric(key, c.concurrency)
        capacity.add_metric(key, c.queue)
        if c.histogram is not None:
            cumulative, buckets = 0, []
            for bound, count in zip(c.histogram.bounds, c.histogram.counts, strict=False):
                cumulative += count
                buckets.append((_le(bound), float(cumulative)))
            buckets.append(("+Inf", float(c.histogram.count)))
            latency.add_metric(key, buckets, c.histogram.sum)
        for quantile, attr in _QUANTILES:
            for summary, family in ((c.latency, recent), (c.wait, wait)):
                value = getattr(summary, attr)
                if value is not None:
                    family.add_metric([*key, quantile], value)
    yield from (invocations, in_flight, queued, limit, capacity, latency, recent, wait)


def _pools(pooled: list[tuple[str, ComponentStatus]]) -> Iterator[Metric]:
    if not pooled:
        return
    instances = _gauge(
        "component_instances", "Instances of a reused component: warm (waiting) or busy", "state"
    )
    size = _gauge("component_instance_pool_size", "Warm instances kept at most (pool_size =)")
    started = CounterMetricFamily(
        "fabric_component_instances_started", "Instances created", labels=_COMPONENT
    )
    reused = CounterMetricFamily(
        "fabric_component_instances_reused",
        "Invocations that ran in a warm instance",
        labels=_COMPONENT,
    )
    retired = CounterMetricFamily(
        "fabric_component_instances_retired",
        "Instances closed, by reason (trap, deadline, cancelled, exit, error, "
        "max-invocations, pool-full, idle, stopped)",
        labels=[*_COMPONENT, "reason"],
    )
    for workload, c in pooled:
        pool = c.pool
        assert pool is not None
        key = [workload, c.name]
        instances.add_metric([*key, "warm"], pool.warm)
        instances.add_metric([*key, "busy"], pool.busy)
        size.add_metric(key, pool.pool_size)
        started.add_metric(key, pool.started)
        reused.add_metric(key, pool.reused)
        reasons = dict.fromkeys(REASONS, 0) | pool.reasons
        for reason, count in reasons.items():
            retired.add_metric([*key, reason], count)
    yield from (instances, size, started, reused, retired)


def _services(services: list[tuple[str, ServiceStatus]]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "fabric_service_up", "1 when the service is ready, else 0", labels=_SERVICE
    )
    state = GaugeMetricFamily(
        "fabric_service_state",
        "1 for the state the service is in (starting, ready, backing-off, failed, "
        "stopping, stopped), 0 for the others",
        labels=[*_SERVICE, "state"],
    )
    restarts = CounterMetricFamily(
        "fabric_service_restarts", "Restarts after an exit or a crash", labels=_SERVICE
    )
    exits = CounterMetricFamily(
        "fabric_service_exits", "Instances that ended (exits and crashes)", labels=_SERVICE
    )
    for workload, s in services:
        key = [workload, s.name, s.kind]
        up.add_metric(key, int(s.state == State.READY.value))
        for each in State:
            state.add_metric([*key, each.value], int(s.state == each.value))
        restarts.add_metric(key, s.restarts)
        exits.add_metric(key, s.exits)
    yield from (up, state, restarts, exits)


def _gauge(name: str, doc: str, *extra: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"fabric_{name}", doc, labels=[*_COMPONENT, *extra])


def _le(bound: float) -> str:
    return repr(float(bound))


def _numbers(value: Any, limit: int) -> Iterator[tuple[str, float]]:
    """The finite numeric leaves of ``value`` (builtins) with their dotted paths."""
    stack: list[tuple[str, Any]] = [("", value)]
    emitted = 0
    while stack and emitted < limit:
        path, item = stack.pop()
        if isinstance(item, bool):
            item = int(item)
        if isinstance(item, int | float):
            if path and math.isfinite(item):
                emitted += 1
                yield path, float(item)
        elif isinstance(item, Mapping):
            prefix = f"{path}." if path else ""
            stack.extend((f"{prefix}{k}", v) for k, v in reversed(list(item.items())))


#: the families fabric defines itself; a service cannot offer one of these names
_OWN = frozenset(
    {
        "fabric_ready",
        "fabric_draining",
        "fabric_start_time_seconds",
        "fabric_service_stat",
        "fabric_service_up",
        "fabric_service_state",
        "fabric_service_restarts",
        "fabric_service_exits",
    }
    | {
        f"fabric_component_{n}"
        for n in (
            "invocations",
            "in_flight",
            "queued",
            "concurrency",
            "queue_capacity",
            "latency_seconds",
            "latency_recent_seconds",
            "wait_recent_seconds",
            "instances",
            "instance_pool_size",
            "instances_started",
            "instances_reused",
            "instances_retired",
        )
    }
)


def metrics_registry(source: Callable[[], StatusReport]) -> CollectorRegistry:
    """A registry of its own with the fabric's families and the process's
    (``process_cpu_seconds_total``, ``process_resident_memory_bytes``, ...)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FabricCollector(source))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The exposition for an ``Accept`` header: (body, content type)."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
