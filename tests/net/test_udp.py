"""UDP sockets: states, datagram boundaries, drops, permits, connected streams."""

from __future__ import annotations

import asyncio

import pytest

from fabric.net import (
    ErrorCode,
    GuestNetwork,
    IpAddressFamily,
    NetTrap,
    OutgoingDatagram,
    Role,
    SocketError,
    UdpSocket,
    UdpState,
    VirtualNetwork,
)
from fabric.net.udp import MAX_DATAGRAM_SIZE, MAX_QUEUED_DATAGRAMS, SEND_PERMIT

from .helpers import V4, V6, addr


@pytest.fixture
def net() -> VirtualNetwork:
    return VirtualNetwork("udp")


@pytest.fixture
def svc(net: VirtualNetwork) -> GuestNetwork:
    return net.attach("svc", Role.SERVICE)


def bound(guest: GuestNetwork, port: int = 0, host: str = "127.0.0.1") -> UdpSocket:
    sock = guest.create_udp_socket(addr(host, 0).family)
    sock.start_bind(guest, addr(host, port))
    sock.finish_bind()
    return sock


def test_state_errors(svc: GuestNetwork) -> None:
    sock = svc.create_udp_socket(V4)
    expectations = [
        (sock.finish_bind, ErrorCode.NOT_IN_PROGRESS),
        (lambda: sock.stream(None), ErrorCode.INVALID_STATE),
        (sock.local_address, ErrorCode.INVALID_STATE),
        (sock.remote_address, ErrorCode.INVALID_STATE),
        (lambda: sock.start_bind(svc, addr("::1", 0)), ErrorCode.INVALID_ARGUMENT),
        (lambda: sock.set_unicast_hop_limit(0), ErrorCode.INVALID_ARGUMENT),
        (lambda: sock.set_receive_buffer_size(0), ErrorCode.INVALID_ARGUMENT),
        (lambda: sock.set_send_buffer_size(0), ErrorCode.INVALID_ARGUMENT),
    ]
    for call, code in expectations:
        with pytest.raises(SocketError) as info:
            call()
        assert info.value.code is code
    sock.start_bind(svc, addr("127.0.0.1", 0))
    assert sock.state is UdpState.BIND_IN_PROGRESS
    with pytest.raises(SocketError) as info:
        sock.local_address()
    assert info.value.code is ErrorCode.INVALID_STATE
    with pytest.raises(SocketError) as info:
        sock.start_bind(svc, addr("127.0.0.1", 0))
    assert info.value.code is ErrorCode.INVALID_STATE
    sock.finish_bind()
    assert sock.local_address().port >= 49152
    assert sock.address_family() is IpAddressFamily.IPV4 and sock.ready()
    sock.set_unicast_hop_limit(7)
    assert sock.unicast_hop_limit() == 7


def test_datagrams_keep_their_boundaries_and_source(svc: GuestNetwork) -> None:
    receiver, sender = bound(svc, 5000), bound(svc)
    incoming, _ = receiver.stream(None)
    _, outgoing = sender.stream(None)
    payloads = [b"a", b"x" * 1000, b"", b"z" * MAX_DATAGRAM_SIZE]
    assert outgoing.check_send() == SEND_PERMIT
    sent = outgoing.send([OutgoingDatagram(p, addr("127.0.0.1", 5000)) for p in payloads])
    assert sent == len(payloads)
    got = incoming.receive(2)
    got += incoming.receive(100)
    assert [d.data for d in got] == payloads
    assert {d.remote_address for d in got} == {sender.local_address()}
    assert incoming.receive(10) == [] and incoming.receive(0) == []


def test_datagram_to_an_unbound_port_is_dropped(net: VirtualNetwork, svc: GuestNetwork) -> None:
    sender = bound(svc)
    _, outgoing = sender.stream(None)
    outgoing.check_send()
    assert outgoing.send([OutgoingDatagram(b"void", addr("127.0.0.1", 9))]) == 1
    assert net.statistics().datagrams_dropped == 1


def test_receive_queue_is_bounded(svc: GuestNetwork) -> None:
    receiver, sender = bound(svc, 5001), bound(svc)
    incoming, _ = receiver.stream(None)
    _, outgoing = sender.stream(None)
    for _ in range(MAX_QUEUED_DATAGRAMS // SEND_PERMIT + 10):
        outgoing.check_send()
        outgoing.send([OutgoingDatagram(b"x", addr("127.0.0.1", 5001))] * SEND_PERMIT)
    assert receiver.queued == MAX_QUEUED_DATAGRAMS
    assert receiver.dropped == 10 * SEND_PERMIT
    receiver.set_receive_buffer_size(1)  # byte bound: one max-size datagram fits, not two
    incoming.receive(MAX_QUEUED_DATAGRAMS)
    outgoing.check_send()
    outgoing.send([OutgoingDatagram(b"y" * 40000, addr("127.0.0.1", 5001))] * 2)
    assert receiver.queued == 1


def test_send_errors_and_permits(svc: GuestNetwork) -> None:
    sender = bound(svc)
    _, outgoing = sender.stream(None)
    with pytest.raises(NetTrap):
        outgoing.send([OutgoingDatagram(b"no permit", addr("127.0.0.1", 1))])
    outgoing.check_send()
    with pytest.raises(NetTrap):
        outgoing.send([OutgoingDatagram(b"x", addr("127.0.0.1", 1))] * (SEND_PERMIT + 1))
    outgoing.check_send()
    assert outgoing.send([]) == 0
    too_big = OutgoingDatagram(b"x" * (MAX_DATAGRAM_SIZE + 1), addr("127.0.0.1", 1))
    for bad, code in [
        (too_big, ErrorCode.DATAGRAM_TOO_LARGE),
        (OutgoingDatagram(b"x", None), ErrorCode.INVALID_ARGUMENT),
        (OutgoingDatagram(b"x", addr("127.0.0.1", 0)), ErrorCode.INVALID_ARGUMENT),
        (OutgoingDatagram(b"x", addr("::1", 1)), ErrorCode.INVALID_ARGUMENT),
    ]:
        outgoing.check_send()
        with pytest.raises(SocketError) as info:
            outgoing.send([bad])
        assert info.value.code is code
    outgoing.check_send()  # an error after a success returns the count instead
    assert outgoing.send([OutgoingDatagram(b"ok", addr("127.0.0.1", 1)), too_big]) == 1


def test_connected_streams_filter_and_restrict(svc: GuestNetwork) -> None:
    a, b, c = bound(svc, 6001), bound(svc, 6002), bound(svc, 6003)
    a_in, a_out = a.stream(addr("127.0.0.1", 6002))
    assert a.remote_address() == addr("127.0.0.1", 6002)
    for sender in (b, c):
        _, out = sender.stream(None)
        out.check_send()
        text = f"from {sender.local_address().port}".encode()
        out.send([OutgoingDatagram(text, addr("127.0.0.1", 6001))])
    assert [d.data for d in a_in.receive(10)] == [b"from 6002"]
    a_out.check_send()
    with pytest.raises(SocketError) as info:
        a_out.send([OutgoingDatagram(b"x", addr("127.0.0.1", 6003))])
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    a_out.check_send()
    assert a_out.send([OutgoingDatagram(b"to b", None)]) == 1
    with pytest.raises(NetTrap):
        a.stream(None)  # the previous pair is still alive
    a_in.close()
    a_out.close()
    a.stream(None)
    with pytest.raises(SocketError) as info:
        a.remote_address()
    assert info.value.code is ErrorCode.INVALID_STATE


def test_ipv6_and_ipv4_sockets_share_the_loopback(svc: GuestNetwork) -> None:
    v4, v6 = bound(svc, 7001, "127.0.0.1"), bound(svc, 7002, "::1")
    v4_in, _ = v4.stream(None)
    _, v6_out = v6.stream(None)
    v6_out.check_send()
    v6_out.send([OutgoingDatagram(b"hi", addr("::1", 7001))])
    (datagram,) = v4_in.receive(1)
    assert datagram.remote_address == addr("127.0.0.1", 7002)
    assert v6.address_family() is V6


async def test_incoming_stream_wakes_on_delivery(svc: GuestNetwork) -> None:
    receiver, sender = bound(svc, 5002), bound(svc)
    incoming, _ = receiver.stream(None)
    _, outgoing = sender.stream(None)
    assert not incoming.ready()
    waiter = asyncio.create_task(incoming.wait_ready())
    await asyncio.sleep(0)
    assert not waiter.done()
    outgoing.check_send()
    outgoing.send([OutgoingDatagram(b"ping", addr("127.0.0.1", 5002))])
    await asyncio.wait_for(waiter, 5)
    assert incoming.receive(1)[0].data == b"ping"
    assert outgoing.ready()
    await outgoing.wait_ready()
    assert "received=1" in repr(receiver)
