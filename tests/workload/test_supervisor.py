"""The supervisor with real native Python services on a real virtual network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fabric.net import VirtualNetwork
from fabric.workload import (
    NativeRunner,
    RestartPolicy,
    ServiceContext,
    ServiceFailed,
    State,
    Supervisor,
    WorkloadError,
)
from fabric.workload.native import NativeService, StreamReaderLike, StreamWriterLike

FAST = RestartPolicy(initial_backoff=0.05, max_backoff=1.0, multiplier=2.0, jitter=0.0)


async def echo(reader: StreamReaderLike, writer: StreamWriterLike) -> None:
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()


@pytest.fixture
async def network() -> AsyncIterator[VirtualNetwork]:
    net = VirtualNetwork("test")
    yield net
    await net.aclose()


def add_native(
    sup: Supervisor,
    net: VirtualNetwork,
    name: str,
    cls: type[Any],
    *,
    ports: tuple[int, ...] = (),
    config: dict[str, Any] | None = None,
    policy: RestartPolicy = FAST,
    ready_timeout: float = 5.0,
    stop_timeout: float = 2.0,
) -> None:
    service_cls: type[NativeService] = cls

    def factory() -> NativeRunner:
        return NativeRunner(
            service_cls, config=config or {}, workload="test", service=name,
            network=net, ports=ports,
        )  # fmt: skip

    sup.add(
        name, factory, policy=policy, ready_timeout=ready_timeout,
        stop_timeout=stop_timeout, kind="native", ports=ports,
    )  # fmt: skip


async def test_restarts_after_the_backoff_until_it_stays_up(network: VirtualNetwork) -> None:
    attempts: list[int] = []

    class Flaky:
        def __init__(self, config: dict[str, Any]) -> None:
            self.port = config["port"]

        async def serve(self, ctx: ServiceContext) -> None:
            attempts.append(len(attempts) + 1)
            if len(attempts) <= 2:
                raise RuntimeError(f"boom {len(attempts)}")
            await ctx.network.start_server(echo, self.port)
            await asyncio.Event().wait()

    sup = Supervisor(name="test")
    add_native(sup, network, "flaky", Flaky, ports=(8080,), config={"port": 8080})
    async with asyncio.timeout(10):
        await sup.start()
        status = await sup.wait_for("flaky", State.READY)
        assert (status.state, status.restarts, status.exits) == ("ready", 2, 2)
        assert status.last_error == "RuntimeError: boom 2"
        assert status.next_attempt_at is None

        history = sup.transitions("flaky")
        assert [t.target for t in history] == [
            State.STARTING, State.BACKING_OFF, State.STARTING,
            State.BACKING_OFF, State.STARTING, State.READY,
        ]  # fmt: skip
        assert history[1].note == "RuntimeError: boom 1"
        # each restart waited at least its backoff: 50 ms, then 100 ms
        assert history[2].at - history[1].at >= 0.05
        assert history[4].at - history[3].at >= 0.1

        reader, writer = await network.open_connection(8080)
        writer.write(b"ping\n")
        await writer.drain()
        assert await reader.readline() == b"ping\n"
        writer.close()

        await sup.stop()
    assert sup.state("flaky") is State.STOPPED
    assert not network.is_listening(8080)  # the instance's listener went away with it


async def test_crash_loop_marks_the_service_failed_with_its_last_error(
    network: VirtualNetwork,
) -> None:
    class Broken:
        def __init__(self, config: dict[str, Any]) -> None:
            pass

        async def serve(self, ctx: ServiceContext) -> None:
            raise ValueError("bad config")

    sup = Supervisor(name="test")
    policy = RestartPolicy(initial_backoff=0.01, max_restarts=2, window=60.0, jitter=0.0)
    add_native(sup, network, "broken", Broken, policy=policy)
    async with asyncio.timeout(10):
        await sup.start()
        with pytest.raises(ServiceFailed) as info:
            await sup.wait_for("broken", State.READY)
        assert str(info.value) == (
            "service 'broken' failed: crash loop: 3 exits within 60s (max_restarts = 2) "
            "(last error: ValueError: bad config)"
        )
        status = sup.status("broken")
        assert (status.state, status.restarts, status.exits) == ("failed", 2, 3)
        assert status.last_error == "ValueError: bad config"
        assert status.failure_reason == "crash loop: 3 exits within 60s (max_restarts = 2)"
        assert "failed=1" in repr(sup)

        await sup.stop()
        assert sup.state("broken") is State.STOPPED
        assert sup.status("broken").last_error == "ValueError: bad config"


async def test_a_failed_service_can_be_restarted(network: VirtualNetwork) -> None:
    crashes = [True]

    class Once:
        def __init__(self, config: dict[str, Any]) -> None:
            pass

        async def serve(self, ctx: ServiceContext) -> None:
            if crashes.pop(0) if crashes else False:
                raise RuntimeError("first start fails")
            await asyncio.Event().wait()

    sup = Supervisor(name="test")
    add_native(sup, network, "once", Once, policy=RestartPolicy(max_restarts=0))
    async with asyncio.timeout(10):
        await sup.start()
        await sup.wait_for("once", State.FAILED)
        await sup.restart("once")
        status = await sup.wait_for("once", State.READY)
        assert status.failure_reason is None
        with pytest.raises(WorkloadError, match="service 'once' is ready, not stopped"):
            await sup.restart("once")
        await sup.stop()


async def test_starts_in_order_and_stops_in_reverse(network: VirtualNetwork) -> None:
    events: list[str] = []

    class Recorder:
        def __init__(self, config: dict[str, Any]) -> None:
            self.name = config["name"]
            self.port = config["port"]
            self.needs = config.get("needs")

        async def serve(self, ctx: ServiceContext) -> None:
            if self.needs is not None:  # started only once what it needs is ready
                assert network.is_listening(self.needs)
            events.append(f"start {self.name}")
            try:
                await ctx.network.start_server(echo, self.port)
                await asyncio.Event().wait()
            finally:
                events.append(f"stop {self.name}")

    sup = Supervisor(name="test")
    for name, port, needs in (("db", 7000, None), ("api", 8080, 7000), ("web", 9090, 8080)):
        config = {"name": name, "port": port, "needs": needs}
        add_native(sup, network, name, Recorder, ports=(port,), config=config)
    async with asyncio.timeout(10):
        await sup.start()
        assert [sup.state(n) for n in ("db", "api", "web")] == [State.READY] * 3
        await sup.stop()
    assert events == [
        "start db", "start api", "start web", "stop web", "stop api", "stop db",
    ]  # fmt: skip


async def test_not_ready_within_the_timeout_counts_as_a_failed_start(
    network: VirtualNetwork,
) -> None:
    class Deaf:
        def __init__(self, config: dict[str, Any]) -> None:
            pass

        async def serve(self, ctx: ServiceContext) -> None:
            await asyncio.Event().wait()  # never listens on its declared port

    sup = Supervisor(name="test")
    add_native(
        sup, network, "deaf", Deaf, ports=(8080,), ready_timeout=0.2,
        policy=RestartPolicy(max_restarts=0),
    )  # fmt: skip
    async with asyncio.timeout(10):
        await sup.start()
        status = sup.status("deaf")
        assert status.state == "failed"
        assert status.last_error == "not ready within 200ms"
        await sup.stop()


async def test_exits_and_system_exit(network: VirtualNetwork) -> None:
    class Quits:
        def __init__(self, config: dict[str, Any]) -> None:
            self.code = config["code"]

        async def serve(self, ctx: ServiceContext) -> None:
            if self.code is None:
                return
            raise SystemExit(self.code)

    sup = Supervisor(name="test")
    on_failure = RestartPolicy(mode="on-failure", max_restarts=0)
    add_native(sup, network, "clean", Quits, config={"code": None}, policy=on_failure)
    add_native(sup, network, "zero", Quits, config={"code": 0}, policy=on_failure)
    add_native(sup, network, "three", Quits, config={"code": 3}, policy=on_failure)
    async with asyncio.timeout(10):
        await sup.start()
        assert sup.status("clean").state == "stopped"
        assert sup.status("zero").state == "stopped"
        three = sup.status("three")
        assert (three.state, three.last_error) == ("failed", "exited with status 3")
        await sup.stop()


async def test_stop_gives_up_waiting_after_the_stop_timeout(network: VirtualNetwork) -> None:
    finished = asyncio.Event()

    class Stubborn:
        def __init__(self, config: dict[str, Any]) -> None:
            pass

        async def serve(self, ctx: ServiceContext) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await asyncio.sleep(0.3)  # ignores the first cancellation for a while
            finally:
                finished.set()

    sup = Supervisor(name="test")
    add_native(sup, network, "stubborn", Stubborn, stop_timeout=0.05)
    async with asyncio.timeout(10):
        await sup.start()
        await sup.stop()
        assert sup.state("stubborn") is State.STOPPED
        assert sup.transitions("stubborn")[-1].note == "did not stop within 50ms"
        assert not finished.is_set()
        await finished.wait()


async def test_status_shows_published_stats_and_backoff(network: VirtualNetwork) -> None:
    gate = asyncio.Event()

    class Counter:
        def __init__(self, config: dict[str, Any]) -> None:
            self.served = 0

        async def serve(self, ctx: ServiceContext) -> None:
            ctx.publish_stats(lambda: {"served": self.served, "workload": ctx.workload})
            self.served = 41
            await gate.wait()
            raise RuntimeError("gate opened")

    sup = Supervisor(name="test")
    slow = RestartPolicy(initial_backoff=30.0, max_backoff=60.0, jitter=0.0)
    add_native(sup, network, "counter", Counter, ports=(), policy=slow)
    async with asyncio.timeout(10):
        await sup.start()
        status = sup.status("counter")
        assert status.state == "ready"
        assert status.stats == {"served": 41, "workload": "test"}
        assert status.kind == "native"
        gate.set()
        backing_off = await sup.wait_for("counter", State.BACKING_OFF)
        assert backing_off.stats is None
        assert backing_off.next_attempt_at is not None
        assert backing_off.next_attempt_at - backing_off.since == pytest.approx(30.0, abs=0.5)
        stats = sup.statistics()
        assert stats.running and [s.name for s in stats.services] == ["counter"]
        assert repr(sup) == "<Supervisor 'test' services=1 backing-off=1>"
        await sup.stop()  # cancels the 30 s backoff at once
        assert sup.status("counter").next_attempt_at is None


async def test_stop_during_start_launches_nothing_more(network: VirtualNetwork) -> None:
    started: list[str] = []

    class Slow:
        def __init__(self, config: dict[str, Any]) -> None:
            self.name = config["name"]

        async def serve(self, ctx: ServiceContext) -> None:
            started.append(self.name)
            await asyncio.Event().wait()  # never listens: stays starting

    sup = Supervisor(name="test")
    add_native(sup, network, "first", Slow, ports=(7000,), config={"name": "first"})
    add_native(sup, network, "second", Slow, ports=(7001,), config={"name": "second"})
    async with asyncio.timeout(10):
        starting = asyncio.create_task(sup.start())
        await sup.wait_for("first", State.STARTING)
        await asyncio.sleep(0.05)
        await sup.stop()
        await starting
    assert started == ["first"]
    assert (sup.state("first"), sup.state("second")) == (State.STOPPED, State.STOPPED)
