"""Socket budgets per guest: a flood of ingress clients uses up the ingress
rule's own room, never the room of the workload's services and components."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from fabric.net import IngressRule, NetworkPolicy, Role, VirtualNetwork
from fabric.net.streams import VirtualStreamReader, VirtualStreamWriter

TIMEOUT = 20.0  # only turns a hang into a failure


async def echo(reader: VirtualStreamReader, writer: VirtualStreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def eventually(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not cond():  # noqa: ASYNC110 - polling a plain counter
            await asyncio.sleep(0.01)


async def refused(port: int) -> bool:
    """True when a real client is closed or reset without a byte."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(TIMEOUT):
            data = await reader.read()
    except ConnectionResetError:
        data = b""
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return data == b""


async def test_idle_ingress_flood_leaves_room_for_the_workloads_own_guests() -> None:
    flood = 300
    # Every guest gets 16 sockets: far fewer than the flood would have taken from
    # a budget shared by the whole workload.
    policy = NetworkPolicy(max_sockets=16, ingress=(IngressRule(port=8080, max_connections=flood),))
    net = VirtualNetwork("shop", policy)
    server = await net.start_server(echo, 8080)
    (ingress,) = await net.start_ingress()
    clients = [await asyncio.open_connection("127.0.0.1", ingress.port) for _ in range(flood)]
    await eventually(lambda: server.accepted == flood)
    assert ingress.active == flood

    # a component of the workload still reaches the service
    component = net.attach("job", Role.COMPONENT)
    reader, writer = await net.open_connection(8080, guest=component)
    writer.write(b"ping")
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readexactly(4) == b"ping"
    writer.close()

    # the client beyond the bound is refused at once, the others stay connected
    assert await refused(ingress.port)
    assert ingress.over_limit == 1
    ingress_guest = next(g for g in net.guests if g.name == "ingress:8080")
    assert ingress_guest.external and ingress_guest.budget.used == 2 * flood
    assert net.native.budget.used == 1, "only the listener is charged to the service"
    r, w = clients[0]
    w.write(b"still here")
    async with asyncio.timeout(TIMEOUT):
        assert await r.readexactly(10) == b"still here"

    for _, w in clients:
        w.close()
    await eventually(lambda: ingress.active == 0)
    r, w = await asyncio.open_connection("127.0.0.1", ingress.port)  # room again
    w.write(b"back")
    async with asyncio.timeout(TIMEOUT):
        assert await r.readexactly(4) == b"back"
    w.close()

    await net.aclose()
    assert net.statistics().sockets == 0
