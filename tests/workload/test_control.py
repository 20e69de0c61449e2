"""The control endpoint over a real Unix socket, serving a small real workload."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fabric.workload import (
    Admission,
    ControlError,
    ControlServer,
    ControlUnavailable,
    NotFound,
    RemoteError,
    StatusReport,
    Supervisor,
    WorkloadStatus,
    default_control_path,
    remote_invoke,
    remote_status,
)
from fabric.workload.control import connect
from fabric.workload.handoff import ConnectionReceiver, channel, closed_ids, send_connection

from .helpers import eventually

Component = Callable[[str | None, list[Any]], Awaitable[Any]]


class PythonWorkload:
    """A ControlTarget whose components are Python coroutines behind real admission."""

    def __init__(self, name: str, supervisor: Supervisor) -> None:
        self.name = name
        self.supervisor = supervisor
        self.components: dict[str, tuple[Admission, Component]] = {}

    def add(self, name: str, fn: Component, limit: int = 4, queue: int = 4) -> None:
        self.components[name] = (Admission(name, limit, queue), fn)

    def status(self) -> StatusReport:
        workload = WorkloadStatus(
            name=self.name,
            services=self.supervisor.statistics().services,
            components=tuple(adm.statistics() for adm, _ in self.components.values()),
        )
        return StatusReport(manifest="inline", pid=os.getpid(), workloads=(workload,))

    async def invoke(
        self,
        workload: str,
        component: str,
        export: str | None,
        args: list[Any],
        output: Any = None,
    ) -> Any:
        if workload != self.name or component not in self.components:
            raise NotFound(f"no component {workload}/{component}")
        admission, fn = self.components[component]
        async with admission.slot():
            return await fn(export, args)


class Sleeper:
    def __init__(self, config: dict[str, Any]) -> None:
        pass

    async def run(self) -> None:
        await asyncio.Event().wait()

    def is_ready(self) -> bool:
        return True

    def stats(self) -> Any:
        return {"naps": 1}


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fc-", dir="/tmp"))  # short: sun_path is 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def target() -> AsyncIterator[PythonWorkload]:
    sup = Supervisor(name="shop")
    sup.add("sleeper", lambda: Sleeper({}), kind="native", ports=(7000,))
    workload = PythonWorkload("shop", sup)
    gate = asyncio.Event()

    async def add(export: str | None, args: list[Any]) -> Any:
        return {"export": export, "sum": sum(args)}

    async def slow(export: str | None, args: list[Any]) -> Any:
        await gate.wait()
        return "done"

    async def weird(export: str | None, args: list[Any]) -> Any:
        return object()

    workload.add("adder", add)
    workload.add("slow", slow, limit=1, queue=0)
    workload.add("weird", weird)
    workload.gate = gate  # type: ignore[attr-defined]
    await sup.start()
    yield workload
    gate.set()
    await sup.stop()


@pytest.fixture
async def server(target: PythonWorkload, socket_dir: Path) -> AsyncIterator[ControlServer]:
    srv = ControlServer(target, socket_dir / "control.sock")
    await srv.start()
    yield srv
    await srv.close()


async def test_status_round_trip(server: ControlServer) -> None:
    async with asyncio.timeout(10):
        report = await remote_status(server.path)
    assert report.pid == os.getpid()
    (workload,) = report.workloads
    (service,) = workload.services
    assert (service.name, service.state, service.ports, service.stats) == (
        "sleeper", "ready", (7000,), {"naps": 1},
    )  # fmt: skip
    assert [c.name for c in workload.components] == ["adder", "slow", "weird"]
    assert oct(server.path.stat().st_mode & 0o777) == "0o600"


async def test_invoke_round_trip_and_counts(server: ControlServer) -> None:
    async with asyncio.timeout(10):
        result = await remote_invoke(server.path, "shop", "adder", "add", [1, 2, 3])
        assert result == {"export": "add", "sum": 6}
        assert await remote_invoke(server.path, "shop", "adder") == {"export": None, "sum": 0}
        report = await remote_status(server.path)
    adder = report.workloads[0].components[0]
    assert (adder.invocations, adder.errors, adder.rejected) == (2, 0, 0)
    assert adder.latency.count == 2 and adder.latency.p99 is not None
    assert server.statistics().requests == 3


async def test_errors_come_back_with_their_kind(
    server: ControlServer, target: PythonWorkload
) -> None:
    async with asyncio.timeout(10):
        with pytest.raises(RemoteError) as info:
            await remote_invoke(server.path, "shop", "nope")
        assert (info.value.kind, info.value.message) == ("NotFound", "no component shop/nope")

        with pytest.raises(RemoteError) as info:
            await remote_invoke(server.path, "shop", "weird")
        assert info.value.kind == "unencodable-result"

        busy = asyncio.create_task(remote_invoke(server.path, "shop", "slow"))
        await eventually(lambda: target.components["slow"][0].statistics().in_flight > 0)
        with pytest.raises(RemoteError) as info:
            await remote_invoke(server.path, "shop", "slow")
        assert info.value.kind == "Overloaded"
        assert "component 'slow' is overloaded" in info.value.message
        target.gate.set()  # type: ignore[attr-defined]
        assert await busy == "done"


async def test_one_connection_carries_many_requests_and_bad_lines_get_errors(
    server: ControlServer,
) -> None:
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(
            b'{"type":"invoke","workload":"shop","component":"adder","args":[40,2]}\n'
            b"\n"
            b"this is not json\n"
            b'{"type":"launch-missiles"}\n'
            b'{"type":"status"}\n'
        )
        await writer.drain()
        replies = [msgspec.json.decode(await reader.readline()) for _ in range(4)]
        writer.close()
    assert replies[0] == {"type": "invoke-reply", "result": {"export": None, "sum": 42}}
    assert replies[1]["type"] == replies[2]["type"] == "error"
    assert replies[1]["kind"] == replies[2]["kind"] == "bad-request"
    assert "launch-missiles" in replies[2]["message"]
    assert replies[3]["type"] == "status-reply"


async def test_draining_refuses_invocations_but_serves_status(server: ControlServer) -> None:
    server.stop_invocations()
    async with asyncio.timeout(10):
        with pytest.raises(RemoteError) as info:
            await remote_invoke(server.path, "shop", "adder")
        assert (info.value.kind, info.value.message) == ("ShuttingDown", "fabric is shutting down")
        assert (await remote_status(server.path)).workloads[0].name == "shop"


async def test_close_lets_requests_in_flight_finish_within_the_grace(
    target: PythonWorkload, socket_dir: Path
) -> None:
    server = ControlServer(target, socket_dir / "c.sock")
    await server.start()
    async with asyncio.timeout(10):
        busy = asyncio.create_task(remote_invoke(server.path, "shop", "slow"))
        await eventually(lambda: server.statistics().in_flight > 0)
        asyncio.get_running_loop().call_later(0.05, target.gate.set)  # type: ignore[attr-defined]
        await server.close(grace=5.0)
        assert await busy == "done"
    assert not server.path.exists()
    with pytest.raises(ControlUnavailable, match="no fabric is running at"):
        await remote_status(server.path)


async def test_socket_file_handling(target: PythonWorkload, socket_dir: Path) -> None:
    path = socket_dir / "x.sock"
    with pytest.raises(ControlUnavailable):
        await remote_status(path)
    path.write_text("not a socket")
    with pytest.raises(ControlError, match="exists and is not a socket"):
        await ControlServer(target, path).start()
    path.unlink()

    first = ControlServer(target, path)
    await first.start()
    try:
        with pytest.raises(ControlError, match="another fabric is already serving"):
            await ControlServer(target, path).start()
    finally:
        await first.close()

    # a socket left behind by a fabric that died is replaced
    import socket

    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    second = ControlServer(target, path)
    await second.start()
    try:
        async with asyncio.timeout(10):
            assert (await remote_status(path)).workloads
    finally:
        await second.close()


def test_default_control_path(tmp_path: Path) -> None:
    manifest = tmp_path / "shop.toml"
    explicit = default_control_path(manifest, environ={"FABRIC_CONTROL": "/run/x.sock"})
    assert explicit == Path("/run/x.sock")
    xdg = default_control_path(manifest, environ={"XDG_RUNTIME_DIR": "/run/user/7"})
    assert xdg.parent == Path("/run/user/7/fabric")
    assert xdg.name.startswith("shop-") and xdg.suffix == ".sock"
    fallback = default_control_path(manifest, environ={})
    assert fallback.parent == Path(f"/tmp/fabric-{os.getuid()}")
    assert fallback.name == xdg.name  # the same manifest always maps to the same name
    other = default_control_path(tmp_path / "sub" / "shop.toml", environ={})
    assert other != fallback
    assert default_control_path(None, environ={}).name == "fabric.sock"
    assert len(str(default_control_path("x" * 200 + ".toml", environ={}))) < 100


async def test_a_connection_handed_to_another_server_is_served_there(
    target: PythonWorkload, socket_dir: Path, server: ControlServer
) -> None:
    """What ``fabric run --workers`` does between its parent and a worker: the front
    server checks the client and reads its first invoke, then passes the connection
    to the back server, which answers it and everything after it."""
    parent_end, child_end = channel()
    kept: list[socket.socket] = []  # the front's duplicates, as the parent keeps them

    def handoff(line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        keep = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(sock.fileno()))
        send_connection(parent_end, len(kept), keep.fileno(), line)
        kept.append(keep)
        return True

    front = ControlServer(target, socket_dir / "front.sock", handoff=handoff)
    await front.start()
    gone = asyncio.Event()
    receiver = ConnectionReceiver(
        asyncio.get_running_loop(), child_end.detach(), server.adopt, gone.set
    )
    try:
        async with asyncio.timeout(10):
            assert await remote_invoke(front.path, "shop", "adder", "add", [1, 2]) == {
                "export": "add", "sum": 3,
            }  # fmt: skip
            reader, writer = await connect(front.path)
            for n in (3, 4):
                line = {"type": "invoke", "workload": "shop", "component": "adder", "args": [n]}
                writer.write(msgspec.json.encode(line) + b"\n")
                assert msgspec.json.decode(await reader.readline())["result"]["sum"] == n
            # the back server answered all three; the front only passed two connections on
            assert (front.statistics().handed_off, front.statistics().requests) == (2, 0)
            assert server.statistics().requests == 3
            # the first connection is over: the back server says so
            await eventually(lambda: closed_ids(parent_end) == [0])
            # closing the back server ends the second connection for its client, although
            # the front still holds a duplicate of it
            await server.close()
            assert await reader.readline() == b""
            writer.close()
    finally:
        receiver.close()
        for keep in kept:
            keep.close()
        parent_end.close()
        await front.close()
    assert not gone.is_set()
