"""The ingress fast path: a native listener behind an ingress rule gets the
real connection's asyncio streams, with the rule's limits, budget, policy
and shutdown kept."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from fabric.net import (
    IngressRule,
    NetworkPolicy,
    Role,
    SocketAddress,
    SocketAddrUse,
    VirtualNetwork,
)

from .helpers import V4, addr

TIMEOUT = 30


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():  # noqa: ASYNC110 - polling a plain counter
            await asyncio.sleep(0.01)


class Echo:
    """A native service: echoes, and remembers what each connection looked like."""

    def __init__(self) -> None:
        self.writers: list[Any] = []
        self.cancelled = 0

    async def __call__(self, reader: Any, writer: Any) -> None:
        self.writers.append(writer)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            writer.close()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def read_all_or_reset(reader: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    except ConnectionResetError:
        return b""


async def test_a_native_listener_gets_the_real_connection() -> None:
    net = VirtualNetwork("w", NetworkPolicy(ingress=(IngressRule(port=8080),)))
    echo = Echo()
    server = await net.start_server(echo, 8080)
    (ingress,) = await net.start_ingress()
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
    payload = os.urandom(1 << 20)
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == payload
    (seen,) = echo.writers
    assert isinstance(seen, asyncio.StreamWriter)
    # the service sees the real client, marked as coming from outside
    assert seen.get_extra_info("peername") == writer.get_extra_info("sockname")
    assert seen.get_extra_info("peer_external") is True
    assert seen.get_extra_info("peer_guest") == "ingress:8080"
    assert seen.get_extra_info("ingress_direct") is True
    writer.close()
    await writer.wait_closed()
    await eventually(lambda: ingress.active == 0)
    assert ingress.connections == ingress.direct == 1
    assert server.accepted == server.direct == 1
    assert "direct=1" in repr(ingress) and "direct=1" in repr(server)
    stats = net.statistics()
    assert stats.connections == 1
    (counters,) = stats.ingress
    assert (counters.port, counters.host_port) == (8080, ingress.port)
    assert (counters.connections, counters.direct, counters.active) == (1, 1, 0)
    guest = next(g for g in net.guests if g.name == "ingress:8080")
    assert guest.budget.used == 0
    await net.aclose()
    assert net.statistics().sockets == 0


async def test_direct_false_splices_as_before() -> None:
    net = VirtualNetwork("w", NetworkPolicy(ingress=(IngressRule(port=8080, direct=False),)))
    echo = Echo()
    server = await net.start_server(echo, 8080)
    (ingress,) = await net.start_ingress()
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
    writer.write(b"ping")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"ping"
    (seen,) = echo.writers
    assert not isinstance(seen, asyncio.StreamWriter)
    assert seen.get_extra_info("peer_guest") == "ingress:8080"
    assert seen.get_extra_info("ingress_direct") is None
    writer.close()
    await writer.wait_closed()
    assert ingress.connections == 1 and ingress.direct == 0 and server.direct == 0
    await net.aclose()


async def test_a_guest_listener_keeps_the_splice() -> None:
    net = VirtualNetwork("w", NetworkPolicy(ingress=(IngressRule(port=8080),)))
    svc = net.attach("svc", Role.SERVICE)
    listener = svc.create_tcp_socket(V4)
    listener.start_bind(svc, addr("127.0.0.1", 8080))
    listener.finish_bind()
    listener.start_listen()
    listener.finish_listen()
    (ingress,) = await net.start_ingress()
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
    await asyncio.wait_for(listener.wait_ready(), TIMEOUT)
    child, ins, outs = listener.accept()
    assert child.peer_guest == "ingress:8080"
    assert ingress.connections == 1 and ingress.direct == 0
    for resource in (ins, outs, child, listener):
        resource.close()
    assert await read_all_or_reset(reader) == b""
    writer.close()
    await net.aclose()


async def test_the_rule_limit_refuses_the_extra_client() -> None:
    net = VirtualNetwork("w", NetworkPolicy(ingress=(IngressRule(port=8080, max_connections=2),)))
    echo = Echo()
    await net.start_server(echo, 8080)
    (ingress,) = await net.start_ingress()
    clients = [await asyncio.open_connection("127.0.0.1", ingress.port) for _ in range(2)]
    await eventually(lambda: len(echo.writers) == 2)
    guest = next(g for g in net.guests if g.name == "ingress:8080")
    assert ingress.active == 2 and guest.budget.used == 4
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
    assert await read_all_or_reset(reader) == b""
    writer.close()
    assert ingress.over_limit == 1 and len(echo.writers) == 2
    assert net.statistics().ingress[0].over_limit == 1
    # the admitted clients are still served
    for r, w in clients:
        w.write(b"still here")
        assert await asyncio.wait_for(r.readexactly(10), TIMEOUT) == b"still here"
        w.close()
        await w.wait_closed()
    await eventually(lambda: ingress.active == 0)
    assert guest.budget.used == 0
    await net.aclose()


async def test_stopping_the_network_closes_fast_path_connections() -> None:
    net = VirtualNetwork("w", NetworkPolicy(ingress=(IngressRule(port=8080),)))
    echo = Echo()
    server = await net.start_server(echo, 8080)
    (ingress,) = await net.start_ingress()
    clients = [await asyncio.open_connection("127.0.0.1", ingress.port) for _ in range(3)]
    await eventually(lambda: server.active_handlers == 3)
    await asyncio.wait_for(net.aclose(), TIMEOUT)
    assert echo.cancelled == 3 and ingress.active == 0 and server.active_handlers == 0
    for reader, writer in clients:
        assert await read_all_or_reset(reader) == b""
        writer.close()


async def test_the_policy_check_still_refuses() -> None:
    def check(address: SocketAddress, use: SocketAddrUse) -> bool:
        return not (use is SocketAddrUse.TCP_CONNECT and address.port == 8080)

    net = VirtualNetwork("w", NetworkPolicy(ingress=(IngressRule(port=8080),)), check=check)
    echo = Echo()
    await net.start_server(echo, 8080)
    (ingress,) = await net.start_ingress()
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
    assert await read_all_or_reset(reader) == b""
    writer.close()
    await eventually(lambda: ingress.refused == 1)
    assert echo.writers == [] and ingress.connections == 0
    assert net.statistics().denied == 1
    await net.aclose()
