"""Instance reuse (``reuse = {...}``) with a real componentize-py guest.

The dbbench guest's reuse modes print a module-global counter (``count``)
and a token drawn on an instance's first invocation (``token``): the same
token means the same instance.  The dbpool test runs the real service
against PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fabric.engine import DeadlineExceeded, GuestTrap
from fabric.net import VirtualStreamReader, VirtualStreamWriter
from fabric.runtime import Runtime
from fabric.workload import manifest_from_dict
from fabric.workload.runtime import Fabric, WorkloadRuntime
from fabric.workload.status import PoolStatus
from tests.guestlib import ROOT
from tests.reference.guests import dbbench_guest

from .helpers import eventually

TIMEOUT = 120.0  # guards against hangs only
DBPOOL_PORT = 7432
HOLD_PORT = 7500


@pytest.fixture(scope="module")
def dbbench() -> Path:
    return dbbench_guest()


def component(name: str, wasm: Path, **extra: Any) -> dict[str, Any]:
    return {"name": name, "wasm": str(wasm), "env": {"REUSE_TAG": name}, **extra}


@contextlib.asynccontextmanager
async def running(
    runtime: Runtime,
    components: list[dict[str, Any]],
    services: list[dict[str, Any]] | None = None,
) -> AsyncIterator[Fabric]:
    raw = {"workloads": [{"name": "w", "components": components, "services": services or []}]}
    manifest = manifest_from_dict(raw, path="<reuse>", base_dir=str(ROOT))
    fabric = Fabric(manifest, runtime=runtime, emit=lambda line: None)
    async with asyncio.timeout(TIMEOUT):
        await fabric.start()
    try:
        yield fabric
    finally:
        async with asyncio.timeout(TIMEOUT):
            await fabric.stop()


def facts(result: dict[str, Any]) -> dict[str, str]:
    out = str(result["stdout"])
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


async def run(wl: WorkloadRuntime, name: str, *args: object) -> dict[str, str]:
    async with asyncio.timeout(TIMEOUT):
        result = await wl.invoke(name, None, [str(a) for a in args])
    got = facts(result)
    got["exit_code"] = str(result["exit_code"])
    return got


def pool(fabric: Fabric, name: str) -> PoolStatus:
    (status,) = [c for c in fabric.status().workloads[0].components if c.name == name]
    assert status.pool is not None
    return status.pool


def attachments(wl: WorkloadRuntime, name: str) -> int:
    """Live network attachments of the component's instances."""
    return sum(1 for g in wl.network.guests if g.name.startswith(f"{name}@"))


REUSE = {"max_invocations": 100, "pool_size": 4, "idle": "1h"}


async def test_globals_persist_and_arguments_are_fresh(runtime: Runtime, dbbench: Path) -> None:
    async with running(runtime, [component("c", dbbench, reuse=REUSE)]) as fab:
        wl = fab.workloads["w"]
        first = await run(wl, "c", "counter")
        second = await run(wl, "c", "counter")
        third = await run(wl, "c", "exit", "0")
        assert [first["count"], second["count"], third["count"]] == ["1", "2", "3"]
        assert first["token"] == second["token"] == third["token"]
        # wasi:cli/environment answers per invocation ...
        assert json.loads(third["argv"]) == ["c", "exit", "0"]
        assert third["env"] == "c"
        # ... while componentize-py filled sys.argv on the instance's first run only.
        assert json.loads(third["sys_argv"]) == ["c", "counter"]
        assert third["exit_code"] == "0"
        stats = pool(fab, "c")
        assert (stats.started, stats.reused) == (1, 2)
        # wasi:cli/exit, even with status 0, ends the instance.
        assert stats.reasons == {"exit": 1}
        assert stats.warm == 0
        after = await run(wl, "c", "counter")
        assert after["count"] == "1" and after["token"] != first["token"]


async def test_fresh_instance_per_invocation_without_reuse(runtime: Runtime, dbbench: Path) -> None:
    async with running(runtime, [component("c", dbbench)]) as fab:
        wl = fab.workloads["w"]
        runs = [await run(wl, "c", "counter") for _ in range(2)]
        assert [r["count"] for r in runs] == ["1", "1"]
        assert runs[0]["token"] != runs[1]["token"]
        (status,) = fab.status().workloads[0].components
        assert status.pool is None


async def test_stdout_of_a_reused_instance_goes_to_the_current_invocation(
    runtime: Runtime, dbbench: Path
) -> None:
    lines: list[str] = []
    raw = {"workloads": [{"name": "w", "components": [component("c", dbbench, reuse=REUSE)]}]}
    manifest = manifest_from_dict(raw, path="<reuse>", base_dir=str(ROOT))
    fab = Fabric(manifest, runtime=runtime, emit=lines.append)
    await fab.start()
    try:
        wl = fab.workloads["w"]
        one = await wl.invoke("c", None, ["counter"])
        two = await wl.invoke("c", None, ["err"])  # prints, then a failing exit
    finally:
        await fab.stop()
    assert "count=1" in one["stdout"] and "count=2" not in one["stdout"]
    assert "count=2" in two["stdout"] and "count=1" not in two["stdout"]
    assert two["exit_code"] == 1
    # stderr goes to the invocation's result and its log prefix, although
    # the guest got its stderr handle during the first invocation.
    assert one["stderr"] == "count=1\n" and two["stderr"] == "count=2\n"
    assert [line for line in lines if "count=" in line] == ["[w/c#1] count=1", "[w/c#2] count=2"]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("crash",), "trap"),
        (("sleep", "30"), "deadline"),
        (("exit", "3"), "exit"),
        (("nonsense",), "exit"),  # unknown mode: the guest exits with status 1
    ],
)
async def test_failures_retire_the_instance(
    runtime: Runtime, dbbench: Path, args: tuple[str, ...], reason: str
) -> None:
    spec = component("c", dbbench, reuse=REUSE, timeout="2s")
    async with running(runtime, [spec]) as fab:
        wl = fab.workloads["w"]
        first = await run(wl, "c", "counter")
        if reason == "trap":
            with pytest.raises(GuestTrap):
                await run(wl, "c", *args)
        elif reason == "deadline":
            with pytest.raises(DeadlineExceeded):
                await run(wl, "c", *args)
        else:
            assert (await run(wl, "c", *args))["exit_code"] != "0"
        stats = pool(fab, "c")
        assert stats.reasons == {reason: 1}
        assert (stats.warm, stats.busy) == (0, 0)
        assert attachments(wl, "c") == 0  # the retired instance's network is closed
        after = await run(wl, "c", "counter")
        assert after["count"] == "1" and after["token"] != first["token"]


async def test_a_cancelled_invocation_retires_its_instance(runtime: Runtime, dbbench: Path) -> None:
    async with running(runtime, [component("c", dbbench, reuse=REUSE)]) as fab:
        wl = fab.workloads["w"]
        first = await run(wl, "c", "counter")
        connected = asyncio.Event()
        never = asyncio.Event()

        async def handle(reader: VirtualStreamReader, writer: VirtualStreamWriter) -> None:
            connected.set()
            await never.wait()  # the guest waits for EOF that never comes

        server = await wl.network.start_server(handle, HOLD_PORT)
        try:
            held = asyncio.create_task(run(wl, "c", "hold", HOLD_PORT))
            async with asyncio.timeout(TIMEOUT):
                await connected.wait()
            held.cancel()
            with pytest.raises(asyncio.CancelledError):
                await held
        finally:
            never.set()
            server.close()
        stats = pool(fab, "c")
        assert stats.reasons == {"cancelled": 1}
        assert (stats.warm, stats.busy) == (0, 0)
        after = await run(wl, "c", "counter")
        assert after["count"] == "1" and after["token"] != first["token"]


async def test_run_returning_err_is_a_failing_exit(runtime: Runtime, dbbench: Path) -> None:
    async with running(runtime, [component("c", dbbench, reuse=REUSE)]) as fab:
        wl = fab.workloads["w"]
        first = await run(wl, "c", "counter")
        bad = await run(wl, "c", "err")  # run returns err without calling wasi:cli/exit
        assert bad["exit_code"] == "1" and bad["count"] == "2"
        assert pool(fab, "c").reasons == {"exit": 1}
        after = await run(wl, "c", "counter")
        assert after["count"] == "1" and after["token"] != first["token"]


async def test_max_invocations(runtime: Runtime, dbbench: Path) -> None:
    reuse = {**REUSE, "max_invocations": 3}
    async with running(runtime, [component("c", dbbench, reuse=reuse)]) as fab:
        wl = fab.workloads["w"]
        runs = [await run(wl, "c", "counter") for _ in range(7)]
        assert [r["count"] for r in runs] == ["1", "2", "3", "1", "2", "3", "1"]
        tokens = [r["token"] for r in runs]
        assert len(set(tokens[0:3])) == len(set(tokens[3:6])) == 1
        assert len(set(tokens)) == 3
        stats = pool(fab, "c")
        assert stats.reasons == {"max-invocations": 2}
        assert (stats.started, stats.reused, stats.warm) == (3, 4, 1)


@contextlib.asynccontextmanager
async def rendezvous(
    wl: WorkloadRuntime, parties: int
) -> AsyncIterator[tuple[asyncio.Event, asyncio.Event]]:
    """A server on the workload's loopback that holds every connection until
    the caller sets ``release`` (then EOF); ``all_in`` is set once ``parties``
    are connected. Nothing is released before the caller has looked."""
    writers: list[VirtualStreamWriter] = []
    all_in = asyncio.Event()
    release = asyncio.Event()

    async def handle(reader: VirtualStreamReader, writer: VirtualStreamWriter) -> None:
        writers.append(writer)
        if len(writers) == parties:
            all_in.set()
        await release.wait()
        writer.close()

    server = await wl.network.start_server(handle, HOLD_PORT)
    try:
        yield all_in, release
    finally:
        release.set()
        server.close()


async def test_concurrent_invocations_never_share_an_instance(
    runtime: Runtime, dbbench: Path
) -> None:
    parties = 4
    reuse = {**REUSE, "pool_size": 2}
    async with running(runtime, [component("c", dbbench, reuse=reuse)]) as fab:
        wl = fab.workloads["w"]
        warmed = await run(wl, "c", "counter")  # one warm instance to start with
        async with rendezvous(wl, parties) as (all_in, release):
            held = [asyncio.create_task(run(wl, "c", "hold", HOLD_PORT)) for _ in range(parties)]
            async with asyncio.timeout(TIMEOUT):
                await all_in.wait()
            assert pool(fab, "c").busy == parties
            release.set()
            results = await asyncio.gather(*held)
        # All four ran at the same time: four different instances, one the warm one.
        tokens = [r["token"] for r in results]
        assert len(set(tokens)) == parties
        assert warmed["token"] in tokens
        assert all(r["released"] == "1" for r in results)
        stats = pool(fab, "c")
        assert (stats.started, stats.busy) == (parties, 0)
        # pool_size is honoured: two stay warm, the other two retire.
        assert stats.warm == 2
        assert stats.reasons == {"pool-full": 2}
        assert attachments(wl, "c") == 2


async def test_idle_instances_are_reclaimed(runtime: Runtime, dbbench: Path) -> None:
    reuse = {**REUSE, "idle": "50ms"}
    async with running(runtime, [component("c", dbbench, reuse=reuse)]) as fab:
        wl = fab.workloads["w"]
        first = await run(wl, "c", "counter")
        async with asyncio.timeout(TIMEOUT):
            await eventually(lambda: pool(fab, "c").warm == 0)
        assert pool(fab, "c").reasons == {"idle": 1}
        assert attachments(wl, "c") == 0
        after = await run(wl, "c", "counter")
        assert after["count"] == "1" and after["token"] != first["token"]


async def test_stop_closes_warm_instances(runtime: Runtime, dbbench: Path) -> None:
    async with running(runtime, [component("c", dbbench, reuse=REUSE)]) as fab:
        wl = fab.workloads["w"]
        await asyncio.gather(*(run(wl, "c", "counter") for _ in range(3)))
        warm = pool(fab, "c").warm
        assert warm >= 1
        assert attachments(wl, "c") == warm
    stats = pool(fab, "c")
    assert stats.warm == 0
    assert stats.reasons.get("stopped") == warm
    assert attachments(wl, "c") == 0


async def test_a_dbpool_connection_in_a_global_survives(runtime: Runtime, dbbench: Path) -> None:
    service = {
        "name": "dbpool",
        "native": "services.dbpool.service:DbPoolService",
        "ports": [DBPOOL_PORT],
        "config": {
            "port": DBPOOL_PORT,
            "databases": {"pg": {"kind": "postgres", "user": "postgres", "max_size": 2}},
        },
    }
    reuse = {**REUSE, "max_invocations": 3}
    async with running(runtime, [component("c", dbbench, reuse=reuse)], [service]) as fab:
        wl = fab.workloads["w"]

        def server_stats() -> dict[str, Any]:
            (svc,) = fab.status().workloads[0].services
            assert isinstance(svc.stats, dict)
            return svc.stats

        runs = [await run(wl, "c", "pooled-keep", DBPOOL_PORT, "pg", "SELECT 7") for _ in range(3)]
        assert [r["conn_uses"] for r in runs] == ["1", "2", "3"]
        assert all(json.loads(r["rows"]) == [[7]] for r in runs)
        stats = server_stats()
        assert stats["clients_total"] == 1  # one connection served all three
        assert stats["requests"] == {"query": 3}
        # The third invocation retired the instance (max_invocations): its
        # network attachment closed, so the service sees the client go.
        async with asyncio.timeout(TIMEOUT):
            await eventually(lambda: server_stats()["clients_connected"] == 0)
        fourth = await run(wl, "c", "pooled-keep", DBPOOL_PORT, "pg", "SELECT 7")
        assert fourth["conn_uses"] == "1"
        assert server_stats()["clients_total"] == 2
