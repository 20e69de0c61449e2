"""Native Python services: loading "module:Class", the context, cleanup, the example."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fabric.net import VirtualNetwork
from fabric.workload import (
    NativeRunner,
    NativeServiceError,
    RestartPolicy,
    ServiceContext,
    State,
    Supervisor,
    WorkloadError,
    load_manifest,
    load_service_class,
)
from fabric.workload.native import StreamReaderLike, StreamWriterLike

from .helpers import eventually

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
async def network() -> AsyncIterator[VirtualNetwork]:
    net = VirtualNetwork("native")
    yield net
    await net.aclose()


def test_load_service_class_from_python_path(tmp_path: Path) -> None:
    (tmp_path / "svc_from_path.py").write_text(
        "class Svc:\n"
        "    def __init__(self, config):\n        self.config = config\n"
        "    async def serve(self, ctx):\n        pass\n"
    )
    try:
        cls = load_service_class("svc_from_path:Svc", [str(tmp_path)])
        assert cls.__name__ == "Svc"
        assert str(tmp_path) in sys.path
    finally:
        sys.modules.pop("svc_from_path", None)
        sys.path.remove(str(tmp_path))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("json", "native service 'json': expected \"module:Class\" like "
                 '"services.dbpool.service:DbPoolService"'),
        ("no_such_module_here:X", "native service 'no_such_module_here:X': cannot import "
                                  "'no_such_module_here': ModuleNotFoundError: No module named "
                                  "'no_such_module_here'"),
        ("json:Nope", "native service 'json:Nope': 'json' has no attribute 'Nope'"),
        ("json:dumps", "native service 'json:dumps': 'dumps' is not a class"),
        ("json:JSONDecoder", "native service 'json:JSONDecoder': JSONDecoder has no "
                             "`async def serve(self, ctx)` method"),
    ],
)  # fmt: skip
def test_load_service_class_errors(spec: str, message: str) -> None:
    with pytest.raises(NativeServiceError) as info:
        load_service_class(spec)
    assert str(info.value) == message


async def test_context_invoke_and_stats(network: VirtualNetwork) -> None:
    calls: list[tuple[str, str | None, Sequence[Any]]] = []

    async def invoker(component: str, export: str | None, args: Sequence[Any]) -> Any:
        calls.append((component, export, args))
        return sum(args)

    ctx = ServiceContext(workload="w", service="s", network=network, invoker=invoker)
    assert await ctx.invoke("adder", "add", [1, 2]) == 3
    assert calls == [("adder", "add", [1, 2])]
    assert ctx.stats() is None
    ctx.publish_stats(lambda: 1 / 0)
    assert ctx.stats() == {"error": "ZeroDivisionError: division by zero"}

    lonely = ServiceContext(workload="w", service="s", network=network)
    with pytest.raises(WorkloadError, match="service 's' of workload 'w' has no invoker"):
        await lonely.invoke("adder")


async def test_a_published_handle_lives_as_long_as_its_instance(
    network: VirtualNetwork,
) -> None:
    handles: dict[str, Any] = {}
    published = asyncio.Event()
    release = asyncio.Event()

    class Publisher:
        def __init__(self, config: dict[str, Any]) -> None:
            self.config = config

        async def serve(self, ctx: ServiceContext) -> None:
            ctx.publish_handle(self)
            published.set()
            await release.wait()

    runner = NativeRunner(
        Publisher, config={}, workload="w", service="pub", network=network, handles=handles
    )
    task = asyncio.create_task(runner.run())
    await published.wait()
    assert isinstance(handles["pub"], Publisher)
    assert runner.context.handle is handles["pub"]
    release.set()
    await task
    assert handles == {}
    assert runner.context.handle is None


async def test_a_crashed_instance_releases_its_port_and_connections(
    network: VirtualNetwork,
) -> None:
    connected = asyncio.Event()
    handler_ended = asyncio.Event()
    starts: list[int] = []

    class CrashOnFirstClient:
        def __init__(self, config: dict[str, Any]) -> None:
            self.crash = asyncio.Event()

        async def handle(self, reader: StreamReaderLike, writer: StreamWriterLike) -> None:
            connected.set()
            self.crash.set()
            try:
                await asyncio.Event().wait()
            finally:
                handler_ended.set()

        async def serve(self, ctx: ServiceContext) -> None:
            starts.append(1)
            await ctx.network.start_server(self.handle, 7000)
            await self.crash.wait()
            raise RuntimeError("lost my mind")

    def factory() -> NativeRunner:
        return NativeRunner(
            CrashOnFirstClient, config={}, workload="native", service="crashy",
            network=network, ports=(7000,),
        )  # fmt: skip

    sup = Supervisor(name="native")
    sup.add("crashy", factory, policy=RestartPolicy(initial_backoff=0.01, jitter=0.0))
    async with asyncio.timeout(10):
        await sup.start()
        reader, writer = await network.open_connection(7000)
        await connected.wait()
        assert await reader.read() == b""  # the crashed instance's connection was closed
        await handler_ended.wait()  # and its handler was cancelled
        writer.close()
        await sup.wait_for("crashy", State.BACKING_OFF)
        status = await sup.wait_for("crashy", State.READY)  # rebinding 7000 worked
        assert status.restarts == 1 and len(starts) == 2
        await sup.stop()


async def test_a_failing_connection_handler_does_not_stop_the_service(
    network: VirtualNetwork,
) -> None:
    class Grumpy:
        def __init__(self, config: dict[str, Any]) -> None:
            pass

        async def handle(self, reader: StreamReaderLike, writer: StreamWriterLike) -> None:
            raise OSError("not today")

        async def serve(self, ctx: ServiceContext) -> None:
            await ctx.network.start_server(self.handle, 7000)
            await asyncio.Event().wait()

    runner = NativeRunner(
        Grumpy, config={}, workload="w", service="grumpy", network=network, ports=(7000,)
    )
    task = asyncio.create_task(runner.run())
    async with asyncio.timeout(10):
        await eventually(runner.is_ready)
        for _ in range(2):
            reader, writer = await network.open_connection(7000)
            assert await reader.read() == b""
            writer.close()
        assert not task.done()
        task.cancel()
        await asyncio.wait({task})
    assert not network.is_listening(7000)


async def test_two_workloads_example_both_bind_8080() -> None:
    manifest = load_manifest(EXAMPLES / "two-workloads.toml")
    networks = {w.name: VirtualNetwork(w.name) for w in manifest.workloads}
    supervisors = []
    try:
        for workload in manifest.workloads:
            sup = Supervisor(name=workload.name)
            for spec in workload.services:
                assert spec.native is not None
                cls = load_service_class(spec.native, manifest.python_path)

                def factory(
                    cls: Any = cls, spec: Any = spec, workload: Any = workload
                ) -> NativeRunner:
                    return NativeRunner(
                        cls, config=spec.config, workload=workload.name, service=spec.name,
                        network=networks[workload.name], ports=spec.ports,
                    )  # fmt: skip

                sup.add(spec.name, factory, policy=spec.restart.policy(), ports=spec.ports)
            supervisors.append(sup)
        async with asyncio.timeout(10):
            for sup in supervisors:
                await sup.start()
            replies = {}
            for name, net in networks.items():
                reader, writer = await net.open_connection(8080)
                writer.write(b"hi\n")
                await writer.drain()
                replies[name] = await reader.readline()
                writer.close()
            assert replies == {"blue": b"blue: hi\n", "green": b"green: hi\n"}
            stats = supervisors[0].status("echo").stats
            assert stats == {"connections": 1, "lines": 1}
    finally:
        for sup in reversed(supervisors):
            await sup.stop()
        for net in networks.values():
            await net.aclose()
        sys.modules.pop("echo_service", None)
        for entry in manifest.python_path:
            if entry in sys.path:
                sys.path.remove(entry)


async def test_metrics_offered_by_a_service_instance(
    network: VirtualNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    class Offering:
        broken = False

        def __init__(self, config: dict[str, Any]) -> None:
            self.hits = 0

        def metrics(self) -> list[dict[str, Any]]:
            if Offering.broken:
                return [{"name": "hits", "kind": "histogram"}]
            return [{"name": "hits", "kind": "counter", "samples": [{"value": self.hits}]}]

        async def serve(self, ctx: ServiceContext) -> None:
            self.hits = 3
            await asyncio.Event().wait()

    def factory() -> NativeRunner:
        return NativeRunner(
            Offering, config={}, workload="native", service="offer", network=network
        )

    sup = Supervisor(name="native")
    sup.add("offer", factory)
    async with asyncio.timeout(10):
        await sup.start()
        await eventually(lambda: bool(sup.status("offer").metrics))
        (family,) = sup.status("offer").metrics
        assert (family.name, family.kind, family.samples[0].value) == ("hits", "counter", 3.0)
        Offering.broken = True  # a malformed answer: no families, one warning
        assert sup.status("offer").metrics == ()
        assert sup.status("offer").metrics == ()
        await sup.stop()
    assert sup.status("offer").metrics == ()  # a stopped service offers nothing
    warnings = [r for r in caplog.records if "metrics() failed" in r.getMessage()]
    assert len(warnings) == 1
