"""Egress to real servers (MariaDB, a real echo server) and ingress from real clients."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from fabric.net import (
    EgressRule,
    ErrorCode,
    IngressRule,
    NetworkPolicy,
    Role,
    SocketAddress,
    SocketError,
    StreamClosed,
    TcpState,
    VirtualNetwork,
    VirtualStreamReader,
    VirtualStreamWriter,
)

from .helpers import V4, addr

TIMEOUT = 30
MARIADB = ("127.0.0.1", 3306)


def free_real_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def real_echo_server() -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def virtual_echo(reader: VirtualStreamReader, writer: VirtualStreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write_eof()
    writer.close()


@pytest.fixture
async def mariadb_net() -> AsyncIterator[VirtualNetwork]:
    policy = NetworkPolicy(egress=(EgressRule("mariadb", 3306, *MARIADB),))
    net = VirtualNetwork("egress", policy)
    yield net
    await net.aclose()
    stats = net.statistics()
    assert stats.sockets == 0 and stats.egress_active == 0


def parse_greeting(packet: bytes) -> tuple[int, bytes]:
    length = int.from_bytes(packet[:3], "little")
    assert len(packet) >= 4 + length
    payload = packet[4 : 4 + length]
    return payload[0], payload[1 : payload.index(b"\0", 1)]


async def test_guest_reads_the_mariadb_greeting_through_an_egress_rule(
    mariadb_net: VirtualNetwork,
) -> None:
    comp = mariadb_net.attach("report#1", Role.COMPONENT)
    lookup = comp.resolve_addresses("mariadb")
    target = SocketAddress.of(lookup.resolve_next_address(), 3306)  # type: ignore[arg-type]
    sock = comp.create_tcp_socket(V4)
    sock.start_connect(comp, target)
    with pytest.raises(SocketError) as info:  # the real connect has not run yet
        sock.finish_connect()
    assert info.value.code is ErrorCode.WOULD_BLOCK
    assert sock.local_address().host == "127.0.0.1"
    await asyncio.wait_for(sock.wait_ready(), TIMEOUT)
    ins, outs = sock.finish_connect()
    assert sock.remote_address() == target
    packet = bytearray()
    while len(packet) < 4 or len(packet) < 4 + int.from_bytes(packet[:3], "little"):
        await asyncio.wait_for(ins.wait_ready(), TIMEOUT)
        packet += ins.read(4096)
    protocol, version = parse_greeting(bytes(packet))
    assert protocol == 10 and b"MariaDB" in version
    assert mariadb_net.statistics().egress_active == 1
    for resource in (ins, outs, sock):
        resource.close()


async def test_native_code_uses_the_same_egress_route(mariadb_net: VirtualNetwork) -> None:
    reader, writer = await mariadb_net.open_connection(3306, "mariadb")
    header = await asyncio.wait_for(reader.readexactly(4), TIMEOUT)
    payload = await reader.readexactly(int.from_bytes(header[:3], "little"))
    assert payload[0] == 10
    writer.close()


async def test_a_loopback_egress_rule_reaches_the_real_host_port() -> None:
    net = VirtualNetwork("w", NetworkPolicy(egress=(EgressRule("127.0.0.1", 3306, *MARIADB),)))
    reader, writer = await net.open_connection(3306, "127.0.0.1")
    header = await asyncio.wait_for(reader.readexactly(4), TIMEOUT)
    assert (await reader.readexactly(int.from_bytes(header[:3], "little")))[0] == 10
    writer.close()
    await net.aclose()


async def test_without_a_rule_mariadb_is_out_of_reach() -> None:
    net = VirtualNetwork("closed")
    comp = net.attach("c", Role.COMPONENT)
    sock = comp.create_tcp_socket(V4)
    with pytest.raises(SocketError) as info:
        sock.start_connect(comp, SocketAddress.parse("10.0.0.5", 3306))
    assert info.value.code is ErrorCode.ACCESS_DENIED
    sock.start_connect(comp, addr(*MARIADB))  # loopback is the workload's own: nobody there
    with pytest.raises(SocketError) as info:
        sock.finish_connect()
    assert info.value.code is ErrorCode.CONNECTION_REFUSED
    with pytest.raises(SocketError) as info:
        comp.resolve_addresses("mariadb").resolve_next_address()
    assert info.value.code is ErrorCode.NAME_UNRESOLVABLE
    await net.aclose()


async def test_real_connect_failure_becomes_the_guest_error() -> None:
    port = free_real_port()
    net = VirtualNetwork(
        "w", NetworkPolicy(egress=(EgressRule("10.9.9.9", 80, "127.0.0.1", port),))
    )
    svc = net.attach("svc", Role.SERVICE)
    sock = svc.create_tcp_socket(V4)
    sock.start_connect(svc, addr("10.9.9.9", 80))
    await asyncio.wait_for(sock.wait_ready(), TIMEOUT)
    with pytest.raises(SocketError) as info:
        sock.finish_connect()
    assert info.value.code is ErrorCode.CONNECTION_REFUSED
    assert sock.state is TcpState.CLOSED
    with pytest.raises(ConnectionRefusedError):
        await net.open_connection(80, "10.9.9.9")
    await net.aclose()


async def test_egress_pumps_both_ways_with_backpressure() -> None:
    server = await real_echo_server()
    real_port = server.sockets[0].getsockname()[1]
    net = VirtualNetwork(
        "w",
        NetworkPolicy(egress=(EgressRule("echo", 7, "127.0.0.1", real_port),), high_water=65536),
    )
    reader, writer = await net.open_connection(7, "echo")
    payload = os.urandom(3 << 20)

    async def send() -> None:
        for i in range(0, len(payload), 100_000):
            writer.write(payload[i : i + 100_000])
            await writer.drain()
            assert writer.end.outbound_buffered <= 100_000 + 65536
        writer.write_eof()

    sender = asyncio.create_task(send())
    echoed = await asyncio.wait_for(reader.read(), TIMEOUT)
    await sender
    assert echoed == payload
    writer.close()
    await net.aclose()
    server.close()
    await server.wait_closed()


async def test_dropping_a_connecting_socket_cancels_the_egress() -> None:
    net = VirtualNetwork("w", NetworkPolicy(egress=(EgressRule("db", 3306, *MARIADB),)))
    svc = net.attach("svc", Role.SERVICE)
    ip = svc.resolve_addresses("db").resolve_next_address()
    assert ip is not None
    sock = svc.create_tcp_socket(V4)
    sock.start_connect(svc, SocketAddress.of(ip, 3306))
    assert net.statistics().egress_active == 1
    sock.close()
    for _ in range(100):
        if net.statistics().egress_active == 0:
            break
        await asyncio.sleep(0.01)
    assert net.statistics().egress_active == 0
    await net.aclose()


async def test_ingress_exposes_a_virtual_port_to_real_clients() -> None:
    net = VirtualNetwork("w", NetworkPolicy(ingress=(IngressRule(port=8080, host_port=0),)))
    await net.start_server(virtual_echo, 8080)
    (ingress,) = await net.start_ingress()
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
    payload = os.urandom(1 << 20)
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == payload
    writer.close()
    await writer.wait_closed()
    assert ingress.connections == 1
    assert net.statistics().ingress_servers == 1
    await net.aclose()
    assert net.statistics().sockets == 0


async def test_ingress_to_a_port_nobody_listens_on_drops_the_client() -> None:
    net = VirtualNetwork("w", NetworkPolicy(ingress=(IngressRule(port=9999),)))
    (ingress,) = await net.start_ingress()
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
    try:
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
    except ConnectionResetError:
        data = b""
    assert data == b""
    writer.close()
    for _ in range(100):
        if ingress.refused:
            break
        await asyncio.sleep(0.01)
    assert ingress.refused == 1 and "refused=1" in repr(ingress)
    await net.aclose()


async def test_guest_sees_reset_when_the_real_peer_resets() -> None:
    async def rst(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(rst, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    net = VirtualNetwork("w", NetworkPolicy(egress=(EgressRule("10.1.1.1", 1, "127.0.0.1", port),)))
    svc = net.attach("svc", Role.SERVICE)
    sock = svc.create_tcp_socket(V4)
    sock.start_connect(svc, addr("10.1.1.1", 1))
    await asyncio.wait_for(sock.wait_ready(), TIMEOUT)
    ins, outs = sock.finish_connect()
    outs.write(b"hello")
    errors: list[BaseException] = []
    while not errors:
        await asyncio.wait_for(ins.wait_ready(), TIMEOUT)
        try:
            ins.read(100)
        except (SocketError, StreamClosed) as exc:
            errors.append(exc)
    assert isinstance(errors[0], SocketError) and errors[0].code is ErrorCode.CONNECTION_RESET
    for resource in (ins, outs, sock):
        resource.close()
    await net.aclose()
    server.close()
    await server.wait_closed()
