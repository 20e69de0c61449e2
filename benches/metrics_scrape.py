"""What one scrape of the metrics endpoint costs the fabric's loop.

    python -m benches.metrics_scrape [--components 10] [--scrapes 200]

Builds a status report shaped like a busy fabric (``--components``
components, every other one reused, each with a latency histogram; one
dbpool service with two databases, its families from
``services.dbpool.metrics``) and times ``exposition.render`` on it: the
work a ``GET /metrics`` does on the loop, HTTP aside. Printed as JSON:
bytes, samples, and milliseconds per scrape (median of ``--scrapes``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import msgspec

from fabric.workload.exposition import metrics_registry, render
from fabric.workload.status import (
    LATENCY_BOUNDS,
    ComponentStatus,
    Histogram,
    LatencySummary,
    MetricFamily,
    PoolStatus,
    ServiceStatus,
    StatusReport,
    WorkloadStatus,
)
from services.dbpool.messages import DatabaseStats, PostgresFrontDoorStats, ServerStats
from services.dbpool.metrics import server_metrics


def busy_report(components: int) -> StatusReport:
    histogram = Histogram(
        bounds=LATENCY_BOUNDS, counts=tuple(range(len(LATENCY_BOUNDS) + 1)), sum=1.5
    )
    pool = PoolStatus(
        max_invocations=128, pool_size=8, idle=30.0, warm=2, busy=1, started=5, reused=40
    )
    latency = LatencySummary(count=1024, p50=0.001, p99=0.01, max=0.02)
    comps = tuple(
        ComponentStatus(
            name=f"c{i}",
            concurrency=16,
            queue=64,
            invocations=1000,
            histogram=histogram,
            latency=latency,
            wait=latency,
            pool=pool if i % 2 else None,
        )
        for i in range(components)
    )
    stats = ServerStats(
        clients_connected=3,
        clients_total=10,
        clients_rejected=0,
        requests_in_flight=1,
        transactions_open=0,
        transactions_abandoned=0,
        requests={"query": 1000, "begin": 30, "commit": 30},
        errors={"database_error": 2},
        databases={"pg": DatabaseStats(kind="postgres"), "my": DatabaseStats(kind="mysql")},
        postgres=PostgresFrontDoorStats(
            port=6432,
            clients_connected=2,
            clients_total=9,
            clients_rejected=1,
            auth_failures=1,
            cancel_requests=0,
            leases=500,
            clients_active=1,
            transactions_abandoned=0,
            errors={"0A000": 1},
            databases={"pg": DatabaseStats(kind="postgres")},
            listeners=2,
            listen_channels=1,
            listen_connections=1,
        ),
        mysql={
            "port": 3307,
            "clients_connected": 1,
            "clients_external": 0,
            "clients_total": 4,
            "clients_rejected": 0,
            "auth_failures": 0,
            "transactions_open": 0,
            "transactions_abandoned": 0,
            "prepared_statements": 3,
            "commands": {"query": 40, "stmt_execute": 12},
            "errors": {"1045": 1},
        },
    )
    families = msgspec.convert(server_metrics(stats), tuple[MetricFamily, ...])
    dbpool = ServiceStatus(name="dbpool", state="ready", since=0.0, kind="native", metrics=families)
    workload = WorkloadStatus(name="shop", services=(dbpool,), components=comps)
    return StatusReport(started_at=1.0, workloads=(workload,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    report = busy_report(args.components)
    registry = metrics_registry(lambda: report)
    body, _ = render(registry, "")
    times = []
    for _ in range(args.scrapes):
        start = time.perf_counter()
        render(registry, "")
        times.append(time.perf_counter() - start)
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    result = {
        "components": args.components,
        "bytes": len(body),
        "samples": samples,
        "ms_per_scrape_median": round(statistics.median(times) * 1000, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
