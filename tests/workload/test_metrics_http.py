"""The metrics server's HTTP behaviour and bounds, and the collector, in-process.

A real `MetricsServer` on 127.0.0.1 (port 0) serves status reports the test
sets; clients are real sockets (raw bytes for the protocol edges, urllib
for plain requests).
"""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fabric.workload import WorkloadError
from fabric.workload.exposition import MAX_STAT_VALUES
from fabric.workload.health import not_ready
from fabric.workload.metrics_server import MetricsServer
from fabric.workload.status import (
    ComponentStatus,
    MetricFamily,
    MetricSample,
    ServiceStatus,
    StatusReport,
    WorkloadStatus,
)
from tests.guestlib import ROOT


def service(name: str, state: str = "ready", **fields: object) -> ServiceStatus:
    return ServiceStatus(name=name, state=state, since=0.0, kind="native", **fields)  # type: ignore[arg-type]


def report(*services: ServiceStatus, started: bool = True, **fields: object) -> StatusReport:
    workload = WorkloadStatus(
        name="w",
        services=services,
        components=(ComponentStatus(name="c", concurrency=4, queue=8),),
    )
    return StatusReport(started_at=1.0 if started else 0.0, workloads=(workload,), **fields)  # type: ignore[arg-type]


class Source:
    def __init__(self) -> None:
        self.report = report(started=False)

    def __call__(self) -> StatusReport:
        return self.report


@pytest.fixture
async def served() -> AsyncIterator[tuple[MetricsServer, Source]]:
    source = Source()
    server = MetricsServer(source, max_clients=3, timeout=0.5, max_request_size=1024)
    await server.start()
    try:
        yield server, source
    finally:
        await server.close()


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


async def get(
    server: MetricsServer, path: str, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(fetch, server.url + path, method)


async def exchange(server: MetricsServer, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(data)
    try:
        async with asyncio.timeout(30):
            return await reader.read(-1)
    finally:
        writer.close()


async def test_probes_follow_the_report(served: tuple[MetricsServer, Source]) -> None:
    server, source = served
    assert (await get(server, "/healthz"))[::2] == (200, b"ok\n")
    status, _, body = await get(server, "/readyz")
    assert (status, body) == (503, b"starting: the workloads are still loading or starting\n")
    source.report = report(service("db"), service("api"))
    assert (await get(server, "/readyz"))[::2] == (200, b"ready\n")
    source.report = report(
        service("db", "backing-off", last_error="ConnectionRefusedError: [Errno 111]\nmore"),
        service("api", "failed", failure_reason="crash loop: 6 restarts within 1m"),
    )
    status, _, body = await get(server, "/readyz")
    assert status == 503
    assert body.decode().splitlines() == [
        "workload w: service db is backing-off (ConnectionRefusedError: [Errno 111] more)",
        "workload w: service api is failed (crash loop: 6 restarts within 1m)",
    ]
    source.report = report(service("db"), draining=True)
    assert (await get(server, "/readyz"))[::2] == (503, b"draining: the fabric is shutting down\n")


async def test_routes_methods_and_head(served: tuple[MetricsServer, Source]) -> None:
    server, _ = served
    status, _, body = await get(server, "/nope")
    assert status == 404 and b"/metrics" in body
    status, headers, _ = await get(server, "/metrics", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, body = await get(server, "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    status, headers, body = await get(server, "/metrics?x=1")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"fabric_component_invocations", "fabric_ready", "process_cpu_seconds"} <= names


async def test_keep_alive_serves_several_requests_on_one_connection(
    served: tuple[MetricsServer, Source],
) -> None:
    server, _ = served
    request = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    replies = await exchange(server, request + request + last)
    assert replies.count(b"HTTP/1.1 200 ") == 3
    assert server.requests == 3


async def test_bounds_of_a_request(served: tuple[MetricsServer, Source]) -> None:
    server, _ = served
    huge = b"GET /metrics HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 2000 + b"\r\n\r\n"
    assert (await exchange(server, huge)).startswith(b"HTTP/1.1 431 ")
    body = b"POST /readyz HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello"
    assert (await exchange(server, body)).startswith(b"HTTP/1.1 405 ")
    body = b"GET /readyz HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello"
    reply = await exchange(server, body)
    assert reply.startswith(b"HTTP/1.1 413 ") and b"connection: close" in reply
    assert (await exchange(server, b"NOT HTTP AT ALL\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    # a request that never completes is closed after the timeout, unanswered
    assert await exchange(server, b"GET /metrics HTTP/1.1\r\n") == b""


async def test_clients_beyond_max_clients_are_refused(
    served: tuple[MetricsServer, Source],
) -> None:
    server, _ = served
    held = [await asyncio.open_connection(server.host, server.port) for _ in range(3)]
    try:
        async with asyncio.timeout(30):
            while server.clients < 3:  # noqa: ASYNC110 - a plain counter
                await asyncio.sleep(0.01)
        assert (await exchange(server, b"")).startswith(b"HTTP/1.1 503 ")
        assert server.refused == 1
    finally:
        for _, writer in held:
            writer.close()
    async with asyncio.timeout(30):
        while server.clients:  # noqa: ASYNC110 - a plain counter
            await asyncio.sleep(0.01)
    assert (await get(server, "/healthz"))[0] == 200
    assert "refused=1" in repr(server)


async def test_an_address_in_use_is_a_clear_error(served: tuple[MetricsServer, Source]) -> None:
    server, source = served
    other = MetricsServer(source, host=server.host, port=server.port)
    with pytest.raises(WorkloadError, match=rf"metrics: cannot listen on {server.url}: "):
        await other.start()


def scrape(source: Source) -> dict[str, list[tuple[dict[str, str], float]]]:
    from fabric.workload.exposition import metrics_registry, render

    body, _ = render(metrics_registry(source), "")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def test_offered_families_are_merged_checked_and_labelled(caplog: pytest.LogCaptureFixture) -> None:
    def offered(value: float) -> tuple[MetricFamily, ...]:
        return (
            MetricFamily(
                name="thing_done_total",
                kind="counter",
                help="things done",
                samples=(MetricSample(value=value, labels={"how": "well"}),),
            ),
            MetricFamily(name="bad name", kind="gauge", samples=(MetricSample(value=1),)),
            MetricFamily(name="ready", kind="gauge", samples=(MetricSample(value=1),)),
            MetricFamily(
                name="depth",
                kind="gauge",
                samples=(
                    MetricSample(value=2, labels={"service": "spoof"}),
                    MetricSample(value=3, labels={"__x": "1"}),
                    MetricSample(value=4),
                ),
            ),
        )

    source = Source()
    source.report = report(
        service("a", metrics=offered(5), stats={"ignored": 1}),
        service("b", metrics=offered(7)),
        service("c", stats={"n": 1, "deep": {"f": 2.5, "s": "text", "b": False}, "inf": 1e999}),
    )
    m = scrape(source)
    assert m["fabric_thing_done_total"] == [
        ({"workload": "w", "service": "a", "how": "well"}, 5.0),
        ({"workload": "w", "service": "b", "how": "well"}, 7.0),
    ]
    assert m["fabric_depth"] == [
        ({"workload": "w", "service": "a"}, 4.0),
        ({"workload": "w", "service": "b"}, 4.0),
    ]
    assert m["fabric_ready"] == [({}, 1.0)]  # fabric's own, not the service's
    assert sorted((labels["stat"], v) for labels, v in m["fabric_service_stat"]) == [
        ("deep.b", 0.0),
        ("deep.f", 2.5),
        ("n", 1.0),
    ]
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "'bad name' is not usable" in warnings and "'ready' is not usable" in warnings
    assert "['service'] refused" in warnings and "['__x'] refused" in warnings


def test_published_stats_are_bounded() -> None:
    source = Source()
    source.report = report(service("s", stats={f"k{i}": i for i in range(MAX_STAT_VALUES + 50)}))
    assert len(scrape(source)["fabric_service_stat"]) == MAX_STAT_VALUES


def test_not_ready_lists_every_reason_once() -> None:
    assert not_ready(report(service("a"), service("b"))) == []
    assert not_ready(report(service("a", "starting"))) == ["workload w: service a is starting"]
    long = "x" * 500
    (reason,) = not_ready(report(service("a", "failed", last_error=long)))
    assert len(reason) < 300 and reason.endswith("...)")


def test_every_exposed_family_is_documented() -> None:
    from benches.metrics_scrape import busy_report

    source = Source()
    busy = busy_report(2)
    stat = service("plain", stats={"n": 1})
    workload = busy.workloads[0]
    source.report = msgspec.structs.replace(
        busy,
        workloads=(msgspec.structs.replace(workload, services=(*workload.services, stat)),),
    )
    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`((?:fabric|process)_[a-z_]+)`", doc))
    exposed = {name for name in scrape(source) if name.startswith("fabric_")}
    suffixes = re.compile(r"_(bucket|count|sum)$")
    missing = sorted(
        n for n in exposed if n not in documented and suffixes.sub("", n) not in documented
    )
    assert missing == []
