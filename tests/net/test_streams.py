"""The asyncio-shaped native API, and native code as a peer of sans-IO guests."""

from __future__ import annotations

import asyncio
import errno
import logging
import os

import pytest

from fabric.net import (
    ErrorCode,
    NetworkPolicy,
    Role,
    ShutdownType,
    SocketError,
    StreamClosed,
    VirtualNetwork,
    VirtualStreamReader,
    VirtualStreamWriter,
)

from .helpers import V4, addr

TIMEOUT = 30


async def echo(reader: VirtualStreamReader, writer: VirtualStreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write_eof()
    writer.close()


@pytest.fixture
async def net() -> VirtualNetwork:
    network = VirtualNetwork("streams")
    yield network  # type: ignore[misc]
    await network.aclose()
    assert network.statistics().sockets == 0


async def test_echo_round_trip_and_addresses(net: VirtualNetwork) -> None:
    server = await net.start_server(echo, 8080)
    assert server.port == 8080 and server.sockets[0].getsockname() == ("127.0.0.1", 8080)
    reader, writer = await net.open_connection(8080)
    assert writer.get_extra_info("peername") == ("127.0.0.1", 8080)
    host, port = writer.get_extra_info("sockname")
    assert host == "127.0.0.1" and 49152 <= port <= 65535
    writer.write(b"hello ")
    writer.writelines([b"virtual ", b"world"])
    await writer.drain()
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"hello virtual world"
    assert reader.at_eof()
    writer.close()
    await writer.wait_closed()
    assert "accepted=1" in repr(server)
    server.close()
    await server.wait_closed()
    assert not server.is_serving() and not net.is_listening(8080)


async def test_many_concurrent_connections(net: VirtualNetwork) -> None:
    await net.start_server(echo, 9000, backlog=512)

    async def client(i: int) -> bool:
        payload = os.urandom(1000 + 97 * i)
        reader, writer = await net.open_connection(9000, "localhost")
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        got = await reader.read()
        writer.close()
        return got == payload

    results = await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(200))), TIMEOUT)
    assert all(results)
    assert net.statistics().connections == 200


async def test_half_close_request_then_response(net: VirtualNetwork) -> None:
    async def summer(reader: VirtualStreamReader, writer: VirtualStreamWriter) -> None:
        total = 0
        async for line in reader:  # until the client's EOF
            total += int(line)
        writer.write(f"{total}\n".encode())
        await writer.drain()
        writer.close()

    await net.start_server(summer, 7000)
    reader, writer = await net.open_connection(7000)
    for n in range(1, 101):
        writer.write(f"{n}\n".encode())
    writer.write_eof()
    with pytest.raises(RuntimeError):
        writer.write(b"after eof")
    assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"5050\n"
    assert await reader.read() == b""
    writer.close()


async def test_reader_methods(net: VirtualNetwork) -> None:
    async def talker(reader: VirtualStreamReader, writer: VirtualStreamWriter) -> None:
        writer.write(b"HEAD|line one\nline two\n" + b"x" * 100 + b"tail")
        writer.close()

    await net.start_server(talker, 7001)
    reader, writer = await net.open_connection(7001)
    assert await reader.readuntil(b"|") == b"HEAD|"
    assert await reader.readexactly(9) == b"line one\n"
    assert await reader.readline() == b"line two\n"
    assert await reader.read(0) == b""
    reader._limit = 50
    with pytest.raises(asyncio.LimitOverrunError):
        await reader.readuntil(b"tail")
    reader._limit = 1 << 16
    assert await reader.readexactly(100) == b"x" * 100
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await reader.readexactly(10)
    assert info.value.partial == b"tail" and reader.at_eof()
    writer.close()


async def test_refused_and_address_in_use_are_oserrors(net: VirtualNetwork) -> None:
    with pytest.raises(ConnectionRefusedError):
        await net.open_connection(1234)
    await net.start_server(echo, 1234)
    with pytest.raises(OSError) as info:
        await net.start_server(echo, 1234)
    assert info.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError):  # socket.gaierror
        await net.open_connection(1234, "no-such-host")
    with pytest.raises(PermissionError):
        await net.open_connection(80, "192.0.2.1")


async def test_drain_waits_under_backpressure(net: VirtualNetwork) -> None:
    gate = asyncio.Event()
    received = bytearray()

    async def slow(reader: VirtualStreamReader, writer: VirtualStreamWriter) -> None:
        await gate.wait()
        received.extend(await reader.read())
        writer.close()

    await net.start_server(slow, 7002)
    reader, writer = await net.open_connection(7002)
    writer.write(b"x" * (1 << 20))  # four times the high-water mark
    drain = asyncio.create_task(writer.drain())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not drain.done(), "nobody reads, so drain must wait"
    gate.set()
    await asyncio.wait_for(drain, TIMEOUT)
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    assert len(received) == 1 << 20
    writer.close()


async def test_closed_server_keeps_existing_connections(net: VirtualNetwork) -> None:
    server = await net.start_server(echo, 7003)
    reader, writer = await net.open_connection(7003)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), TIMEOUT) == b"ping"  # accepted
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await net.open_connection(7003)
    writer.write(b"still")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"still"
    writer.close()


async def test_abort_resets_the_peer(net: VirtualNetwork) -> None:
    outcome: asyncio.Future[BaseException | bytes] = asyncio.get_running_loop().create_future()

    async def reader_side(reader: VirtualStreamReader, writer: VirtualStreamWriter) -> None:
        try:
            outcome.set_result(await reader.read())
        except OSError as exc:
            outcome.set_result(exc)
        writer.close()

    await net.start_server(reader_side, 7004)
    _, writer = await net.open_connection(7004)
    writer.write(b"partial")
    writer.abort()
    result = await asyncio.wait_for(outcome, TIMEOUT)
    assert isinstance(result, ConnectionResetError)


async def test_writer_to_a_closed_peer_fails_on_drain(net: VirtualNetwork) -> None:
    async def closer(reader: VirtualStreamReader, writer: VirtualStreamWriter) -> None:
        writer.close()

    await net.start_server(closer, 7005)
    reader, writer = await net.open_connection(7005)
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    writer.write(b"into the void")
    with pytest.raises(ConnectionResetError):
        await writer.drain()
    writer.close()


async def test_handler_failure_is_logged_and_closes_the_connection(
    net: VirtualNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(reader: VirtualStreamReader, writer: VirtualStreamWriter) -> None:
        raise ValueError("boom")

    await net.start_server(broken, 7006)
    with caplog.at_level(logging.ERROR, logger="fabric.net"):
        reader, writer = await net.open_connection(7006)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    assert any("handler failed" in r.getMessage() for r in caplog.records)
    writer.close()


async def test_wait_listening(net: VirtualNetwork) -> None:
    with pytest.raises(TimeoutError):
        await net.wait_listening(7007, timeout=0.01)
    waiter = asyncio.create_task(net.wait_listening(7007, timeout=TIMEOUT))
    await asyncio.sleep(0)
    assert not waiter.done()
    await net.start_server(echo, 7007)
    await waiter
    assert net.is_listening(7007)


async def test_native_server_and_sans_io_guest_are_peers(net: VirtualNetwork) -> None:
    """A component drives the WIT calls; a native echo server answers."""
    await net.start_server(echo, 5432)
    comp = net.attach("client#1", Role.COMPONENT)
    sock = comp.create_tcp_socket(V4)
    sock.start_connect(comp, addr("127.0.0.1", 5432))
    await sock.wait_ready()
    ins, outs = sock.finish_connect()
    payload = os.urandom(600_000)  # more than one high-water mark
    view, received = memoryview(payload), bytearray()
    while view or len(received) < len(payload):
        if view and outs.ready():
            n = min(outs.check_write(), len(view))
            outs.write(view[:n])
            view = view[n:]
            if not view:
                sock.shutdown(ShutdownType.SEND)
        received += ins.read(1 << 16)
        if not ins.ready() and not (view and outs.ready()):
            waits = [asyncio.ensure_future(ins.wait_ready())]
            if view:
                waits.append(asyncio.ensure_future(outs.wait_ready()))
            _, pending = await asyncio.wait(waits, timeout=TIMEOUT, return_when="FIRST_COMPLETED")
            for task in pending:
                task.cancel()
    assert bytes(received) == payload
    with pytest.raises(StreamClosed):
        ins.read(1)
    ins.close()
    outs.close()
    sock.close()
    comp.close()


async def test_native_client_and_sans_io_guest_server_are_peers(net: VirtualNetwork) -> None:
    svc = net.attach("svc", Role.SERVICE)
    listener = svc.create_tcp_socket(V4)
    listener.start_bind(svc, addr("0.0.0.0", 6543))
    listener.finish_bind()
    listener.start_listen()
    listener.finish_listen()

    async def guest_server() -> bytes:
        await listener.wait_ready()
        child, ins, outs = listener.accept()
        got = bytearray()
        while True:
            await ins.wait_ready()
            try:
                got += ins.read(4096)
            except StreamClosed:
                break
        outs.write(bytes(got[::-1]))
        child.shutdown(ShutdownType.BOTH)
        for resource in (ins, outs, child):
            resource.close()
        return bytes(got)

    task = asyncio.create_task(guest_server())
    reader, writer = await net.open_connection(6543)
    writer.write(b"abcdef")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"fedcba"
    assert await task == b"abcdef"
    writer.close()
    listener.close()


async def test_native_api_obeys_the_socket_cap() -> None:
    net = VirtualNetwork("capped", NetworkPolicy(max_sockets=3))
    await net.start_server(echo, 80)
    _, writer = await net.open_connection(80)  # client + accepted = 3 sockets
    await asyncio.sleep(0)
    with pytest.raises(OSError) as info:
        await net.open_connection(80)
    assert info.value.errno == errno.EMFILE
    writer.close()
    await net.aclose()
    with pytest.raises(SocketError) as sinfo:
        net.native.create_tcp_socket(V4)
    assert sinfo.value.code is ErrorCode.INVALID_STATE
