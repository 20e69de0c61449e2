"""Port tables: per-workload isolation, collisions, ephemeral ports, rebinding."""

from __future__ import annotations

import pytest

from fabric.net import (
    EPHEMERAL_FIRST,
    EPHEMERAL_LAST,
    ErrorCode,
    NetworkPolicy,
    PortTable,
    Role,
    SocketError,
    TcpState,
    VirtualNetwork,
)

from .helpers import V4, V6, addr, connect, listen


def test_two_workloads_both_bind_8080() -> None:
    one, two = VirtualNetwork("one"), VirtualNetwork("two")
    svc1, svc2 = one.attach("svc", Role.SERVICE), two.attach("svc", Role.SERVICE)
    server1, server2 = listen(svc1, 8080), listen(svc2, 8080)
    _, _, out1 = connect(svc1, addr("127.0.0.1", 8080))
    _, _, out2 = connect(svc2, addr("127.0.0.1", 8080))
    out1.write(b"to one")
    out2.write(b"to two")
    _, in1, _ = server1.accept()
    _, in2, _ = server2.accept()
    assert (in1.read(100), in2.read(100)) == (b"to one", b"to two")
    assert one.statistics().tcp_listening == two.statistics().tcp_listening == (8080,)


@pytest.mark.parametrize("second", ["127.0.0.1", "127.0.0.2", "0.0.0.0", "::1", "::"])
def test_listening_port_collides_across_all_loopback_addresses(second: str) -> None:
    net = VirtualNetwork("w")
    svc = net.attach("svc", Role.SERVICE)
    listen(svc, 8080, "127.0.0.1")
    sock = svc.create_tcp_socket(addr(second, 0).family)
    with pytest.raises(SocketError) as info:
        sock.start_bind(svc, addr(second, 8080))
    assert info.value.code is ErrorCode.ADDRESS_IN_USE
    assert sock.state is TcpState.UNBOUND


def test_bound_only_port_may_be_rebound_but_one_listener_per_port() -> None:
    net = VirtualNetwork("w")
    svc = net.attach("svc", Role.SERVICE)
    first = svc.create_tcp_socket(V4)
    first.start_bind(svc, addr("127.0.0.1", 9000))
    first.finish_bind()
    second = svc.create_tcp_socket(V4)
    second.start_bind(svc, addr("127.0.0.1", 9000))  # SO_REUSEADDR, as wasmtime
    second.finish_bind()
    first.start_listen()
    first.finish_listen()
    second.start_listen()
    with pytest.raises(SocketError) as info:
        second.finish_listen()
    assert info.value.code is ErrorCode.ADDRESS_IN_USE
    assert second.state is TcpState.CLOSED
    third = svc.create_tcp_socket(V4)
    with pytest.raises(SocketError) as info:
        third.start_bind(svc, addr("127.0.0.1", 9000))
    assert info.value.code is ErrorCode.ADDRESS_IN_USE


def test_closed_listener_frees_its_port_even_with_live_connections() -> None:
    net = VirtualNetwork("w")
    svc = net.attach("svc", Role.SERVICE)
    server = listen(svc, 9001)
    client, _, _ = connect(svc, addr("127.0.0.1", 9001))
    accepted, _, aouts = server.accept()
    aouts.write(b"\0" * 10)
    server.close()
    again = listen(svc, 9001)  # no TIME_WAIT here
    assert again.is_listening() and client.state is TcpState.CONNECTED
    assert accepted.local_address().port == 9001


def test_ephemeral_ports_are_distinct_in_range_and_skip_used_ones() -> None:
    net = VirtualNetwork("w")
    svc = net.attach("svc", Role.SERVICE)
    listen(svc, EPHEMERAL_FIRST)  # taken explicitly: the allocator must skip it
    ports = [listen(svc, 0).local_address().port for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(EPHEMERAL_FIRST < p <= EPHEMERAL_LAST for p in ports)
    client, _, _ = connect(svc, addr("127.0.0.1", ports[0]))
    assert client.local_address().port not in ports  # implicit binds take their own


def test_ephemeral_allocation_wraps_and_reports_exhaustion() -> None:
    table = PortTable("tcp", reuse_bound=True)
    owner = object()
    span = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1
    bindings = [table.bind(0, owner) for _ in range(span)]
    assert sorted(b.port for b in bindings) == list(range(EPHEMERAL_FIRST, EPHEMERAL_LAST + 1))
    with pytest.raises(SocketError) as info:
        table.bind(0, owner)
    assert info.value.code is ErrorCode.ADDRESS_IN_USE
    bindings[100].release()
    assert table.bind(0, owner).port == EPHEMERAL_FIRST + 100
    assert "ports=16384" in repr(table)


def test_udp_ports_are_exclusive_and_separate_from_tcp() -> None:
    net = VirtualNetwork("w")
    svc = net.attach("svc", Role.SERVICE)
    listen(svc, 5353)
    first = svc.create_udp_socket(V4)
    first.start_bind(svc, addr("127.0.0.1", 5353))  # TCP 5353 does not matter
    first.finish_bind()
    second = svc.create_udp_socket(V6)
    with pytest.raises(SocketError) as info:
        second.start_bind(svc, addr("::1", 5353))
    assert info.value.code is ErrorCode.ADDRESS_IN_USE
    first.close()
    second.start_bind(svc, addr("::1", 5353))
    assert net.statistics().udp_ports == (5353,)


def test_socket_budget_is_per_guest() -> None:
    net = VirtualNetwork("w", NetworkPolicy(max_sockets=2))
    a, b = net.attach("a", Role.SERVICE), net.attach("b", Role.COMPONENT)
    socks = [a.create_tcp_socket(V4), a.create_udp_socket(V4), b.create_tcp_socket(V4)]
    with pytest.raises(SocketError) as info:
        a.create_tcp_socket(V4)
    assert info.value.code is ErrorCode.NEW_SOCKET_LIMIT
    b.create_udp_socket(V4)  # a full budget of `a` leaves `b` its own room
    with pytest.raises(SocketError) as info:
        b.create_tcp_socket(V4)
    assert info.value.code is ErrorCode.NEW_SOCKET_LIMIT
    socks[0].close()
    a.create_tcp_socket(V6)
    assert net.socket_count == 4
    assert a.statistics().budget_used == 2 and a.statistics().budget_refused == 1
