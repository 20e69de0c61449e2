"""The tcp-socket state machine: every operation in every state (sans-IO, no loop)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fabric.net import (
    ErrorCode,
    GuestNetwork,
    IpAddress,
    IpAddressFamily,
    NetworkPolicy,
    Role,
    ShutdownType,
    SocketAddress,
    SocketError,
    StreamClosed,
    TcpSocket,
    TcpState,
    VirtualNetwork,
)
from fabric.net.tcp import SECOND, TRANSITIONS, state_diagram

from .helpers import V4, V6, addr, connect, listen, read_all

S = TcpState
OK = "ok"
IS = ErrorCode.INVALID_STATE
NIP = ErrorCode.NOT_IN_PROGRESS
CC = ErrorCode.CONCURRENCY_CONFLICT
WB = ErrorCode.WOULD_BLOCK


@pytest.fixture
def net() -> VirtualNetwork:
    return VirtualNetwork("states")


@pytest.fixture
def svc(net: VirtualNetwork) -> GuestNetwork:
    return net.attach("svc", Role.SERVICE)


def make(svc: GuestNetwork, state: TcpState) -> TcpSocket:
    """A fresh socket in `state` (a listener on port 9000 serves the connecting ones)."""
    if not svc.network.is_listening(9000):
        listen(svc, 9000)
    sock = svc.create_tcp_socket(V4)
    if state is S.UNBOUND:
        return sock
    if state is S.CONNECT_IN_PROGRESS:
        sock.start_connect(svc, addr("127.0.0.1", 9000))
        return sock
    if state is S.CONNECTED:
        sock.start_connect(svc, addr("127.0.0.1", 9000))
        sock.finish_connect()
        return sock
    if state is S.CLOSED:
        sock.start_connect(svc, addr("127.0.0.1", 1))
        with pytest.raises(SocketError):
            sock.finish_connect()
        return sock
    sock.start_bind(svc, addr("127.0.0.1", 0))
    if state is S.BIND_IN_PROGRESS:
        return sock
    sock.finish_bind()
    if state is S.BOUND:
        return sock
    sock.start_listen()
    if state is S.LISTEN_IN_PROGRESS:
        return sock
    sock.finish_listen()
    assert state is S.LISTENING
    return sock


def op_start_bind(s: TcpSocket) -> object:
    return s.start_bind(s.guest, addr("127.0.0.1", 0))


def op_start_connect(s: TcpSocket) -> object:
    return s.start_connect(s.guest, addr("127.0.0.1", 9000))


OPERATIONS: dict[str, Callable[[TcpSocket], object]] = {
    "start-bind": op_start_bind,
    "finish-bind": lambda s: s.finish_bind(),
    "start-connect": op_start_connect,
    "finish-connect": lambda s: s.finish_connect(),
    "start-listen": lambda s: s.start_listen(),
    "finish-listen": lambda s: s.finish_listen(),
    "accept": lambda s: s.accept(),
    "shutdown": lambda s: s.shutdown(ShutdownType.BOTH),
    "local-address": lambda s: s.local_address(),
    "remote-address": lambda s: s.remote_address(),
    "set-listen-backlog-size": lambda s: s.set_listen_backlog_size(10),
    "keep-alive-enabled": lambda s: s.set_keep_alive_enabled(True),
    "hop-limit": lambda s: s.set_hop_limit(10),
    "receive-buffer-size": lambda s: s.receive_buffer_size(),
}

STATES = [
    S.UNBOUND,
    S.BIND_IN_PROGRESS,
    S.BOUND,
    S.LISTEN_IN_PROGRESS,
    S.LISTENING,
    S.CONNECT_IN_PROGRESS,
    S.CONNECTED,
    S.CLOSED,
]

# rows: operation; columns: STATES above.  Matches wasmtime's p2_tcp_states
# program, plus local-address answering while a connect is in progress.
EXPECTED: dict[str, list[object]] = {
    "start-bind": [OK, IS, IS, IS, IS, IS, IS, IS],
    "finish-bind": [NIP, OK, NIP, NIP, NIP, NIP, NIP, NIP],
    "start-connect": [OK, IS, OK, IS, IS, CC, IS, IS],
    "finish-connect": [NIP, NIP, NIP, NIP, NIP, OK, NIP, NIP],
    "start-listen": [IS, IS, OK, IS, IS, IS, IS, IS],
    "finish-listen": [NIP, NIP, NIP, OK, NIP, NIP, NIP, NIP],
    "accept": [IS, IS, IS, IS, WB, IS, IS, IS],
    "shutdown": [IS, IS, IS, IS, IS, IS, OK, IS],
    "local-address": [IS, IS, OK, OK, OK, OK, OK, IS],
    "remote-address": [IS, IS, IS, IS, IS, IS, OK, IS],
    "set-listen-backlog-size": [OK, OK, OK, OK, OK, IS, IS, IS],
    "keep-alive-enabled": [OK, OK, OK, OK, OK, OK, OK, IS],
    "hop-limit": [OK, OK, OK, OK, OK, OK, OK, IS],
    "receive-buffer-size": [OK, OK, OK, OK, OK, OK, OK, IS],
}

CASES = [
    pytest.param(op, state, expected, id=f"{op}@{state.value}")
    for op, row in EXPECTED.items()
    for state, expected in zip(STATES, row, strict=True)
]


@pytest.mark.parametrize(("op", "state", "expected"), CASES)
def test_operation_in_state(svc: GuestNetwork, op: str, state: TcpState, expected: object) -> None:
    sock = make(svc, state)
    assert sock.state is state
    if expected == OK:
        OPERATIONS[op](sock)
        after = TRANSITIONS.get(op, {}).get(state, state)
        assert sock.state is after
    else:
        with pytest.raises(SocketError) as info:
            OPERATIONS[op](sock)
        assert info.value.code is expected
        assert sock.state is state, "a refused call must not change the state"


def test_every_transition_in_the_table_is_tested() -> None:
    for op, allowed in TRANSITIONS.items():
        for state in allowed:
            # allowed: succeeds, or answers would-block (accept with an empty queue)
            assert EXPECTED[op][STATES.index(state)] in (OK, WB), (op, state)


def test_ready_follows_the_operational_semantics(svc: GuestNetwork) -> None:
    for state in STATES:
        sock = make(svc, state)
        # everything but an empty listener is ready (loopback connects finish at once)
        assert sock.ready() is (state is not S.LISTENING), state
    server = make(svc, S.LISTENING)
    connect(svc, server.local_address())
    assert server.ready()


def test_failed_connect_closes_the_socket_and_frees_the_port(
    net: VirtualNetwork, svc: GuestNetwork
) -> None:
    sock = svc.create_tcp_socket(V4)
    sock.start_connect(svc, addr("127.0.0.1", 4444))
    assert sock.local_address().port in net.tcp_ports
    with pytest.raises(SocketError) as info:
        sock.finish_connect()
    assert info.value.code is ErrorCode.CONNECTION_REFUSED
    assert sock.state is S.CLOSED
    assert net.tcp_ports.ports() == []
    assert net.statistics().refused == 1


@pytest.mark.parametrize(
    ("family", "host", "port"),
    [
        (V4, "0.0.0.0", 80),  # unspecified remote
        (V4, "127.0.0.1", 0),  # port 0
        (V4, "::1", 80),  # wrong family
        (V6, "127.0.0.1", 80),  # IPv4 address on an IPv6 socket
        (V6, "::ffff:127.0.0.1", 80),  # IPv4-mapped on an IPv6 socket
        (V6, "::", 80),
        (V4, "255.255.255.255", 80),  # broadcast
        (V4, "224.254.0.0", 80),  # multicast
        (V6, "ff00::", 80),
    ],
)
def test_connect_rejects_bad_addresses_without_changing_state(
    svc: GuestNetwork, family: IpAddressFamily, host: str, port: int
) -> None:
    sock = svc.create_tcp_socket(family)
    for _ in range(2):  # the socket stays usable: same answer twice
        with pytest.raises(SocketError) as info:
            sock.start_connect(svc, addr(host, port))
        assert info.value.code is ErrorCode.INVALID_ARGUMENT
        assert sock.state is S.UNBOUND


@pytest.mark.parametrize(
    ("family", "host", "code"),
    [
        (V4, "::1", ErrorCode.INVALID_ARGUMENT),
        (V6, "127.0.0.1", ErrorCode.INVALID_ARGUMENT),
        (V6, "::ffff:127.0.0.1", ErrorCode.INVALID_ARGUMENT),
        (V4, "255.255.255.255", ErrorCode.INVALID_ARGUMENT),
        (V4, "224.254.0.0", ErrorCode.INVALID_ARGUMENT),
        (V6, "ff00::", ErrorCode.INVALID_ARGUMENT),
        (V4, "192.0.2.0", ErrorCode.ADDRESS_NOT_BINDABLE),
        (V6, "2001:db8::", ErrorCode.ADDRESS_NOT_BINDABLE),
    ],
)
def test_bind_rejects_bad_addresses(
    svc: GuestNetwork, family: IpAddressFamily, host: str, code: ErrorCode
) -> None:
    sock = svc.create_tcp_socket(family)
    with pytest.raises(SocketError) as info:
        sock.start_bind(svc, addr(host, 0))
    assert info.value.code is code
    assert sock.state is S.UNBOUND
    sock.start_bind(svc, addr("127.0.0.1" if family is V4 else "::1", 0))  # still bindable


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "127.9.9.9", "::1", "::"])
def test_bind_ephemeral_keeps_ip_and_picks_a_port(svc: GuestNetwork, host: str) -> None:
    sock = svc.create_tcp_socket(addr(host, 0).family)
    sock.start_bind(svc, addr(host, 0))
    sock.finish_bind()
    local = sock.local_address()
    assert local.host == addr(host, 0).host
    assert 49152 <= local.port <= 65535


def test_socket_belongs_to_its_network(net: VirtualNetwork, svc: GuestNetwork) -> None:
    other = net.attach("other", Role.SERVICE)
    sock = svc.create_tcp_socket(V4)
    with pytest.raises(SocketError) as info:
        sock.start_bind(other, addr("127.0.0.1", 0))
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_local_address_answers_while_connecting(svc: GuestNetwork) -> None:
    # wasi-libc traps on getsockname() after a non-blocking connect if this fails
    server = listen(svc)
    client = svc.create_tcp_socket(V4)
    client.start_connect(svc, server.local_address())
    assert client.state is S.CONNECT_IN_PROGRESS
    local = client.local_address()
    assert local.host == "127.0.0.1" and local.port >= 49152


def test_socketpair_addresses_are_consistent(svc: GuestNetwork) -> None:
    # CPython's socketpair emulation checks exactly this
    server = listen(svc, 0, "127.0.0.1")
    client, _, _ = connect(svc, server.local_address())
    accepted, _, _ = server.accept()
    assert accepted.local_address() == client.remote_address()
    assert accepted.remote_address() == client.local_address()
    assert accepted.state is S.CONNECTED and accepted.address_family() is V4


def test_accept_on_unspecified_listener_reports_the_dialled_address(svc: GuestNetwork) -> None:
    server = listen(svc, 7000, "0.0.0.0")
    assert server.local_address() == addr("0.0.0.0", 7000)
    client, _, _ = connect(svc, addr("127.0.0.3", 7000))
    accepted, _, _ = server.accept()
    assert accepted.local_address() == addr("127.0.0.3", 7000)
    assert client.remote_address() == addr("127.0.0.3", 7000)


def test_ipv6_client_reaches_ipv4_listener_on_the_shared_loopback(svc: GuestNetwork) -> None:
    server = listen(svc, 7001, "127.0.0.1")
    client, _ins, outs = connect(svc, addr("::1", 7001))
    accepted, ains, _ = server.accept()
    outs.write(b"v6")
    assert ains.read(10) == b"v6"
    assert accepted.remote_address().family is V4
    assert client.local_address().host == "::1"


def test_backlog_limits_the_accept_queue(net: VirtualNetwork, svc: GuestNetwork) -> None:
    server = svc.create_tcp_socket(V4)
    with pytest.raises(SocketError) as info:
        server.set_listen_backlog_size(0)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    server.set_listen_backlog_size(2**64 - 1)  # clamped, never an error
    server.set_listen_backlog_size(2)
    server.start_bind(svc, addr("127.0.0.1", 0))
    server.finish_bind()
    server.start_listen()
    server.finish_listen()
    target = server.local_address()
    connect(svc, target)
    connect(svc, target)
    third = svc.create_tcp_socket(V4)
    third.start_connect(svc, target)
    with pytest.raises(SocketError) as info:
        third.finish_connect()
    assert info.value.code is ErrorCode.CONNECTION_REFUSED
    server.accept()
    connect(svc, target)  # room again
    server.set_listen_backlog_size(5)  # may change while listening
    assert server.listen_backlog_size == 5


def test_dropping_a_listener_resets_queued_connections(svc: GuestNetwork) -> None:
    server = listen(svc)
    _client, ins, outs = connect(svc, server.local_address())
    server.close()
    with pytest.raises(SocketError) as info:
        ins.read(10)
    assert info.value.code is ErrorCode.CONNECTION_RESET
    with pytest.raises(StreamClosed):
        ins.read(10)
    with pytest.raises(SocketError) as info:
        outs.check_write()
    assert info.value.code is ErrorCode.CONNECTION_RESET


def test_connecting_twice_is_a_concurrency_conflict(svc: GuestNetwork) -> None:
    server = listen(svc)
    sock = svc.create_tcp_socket(V4)
    sock.start_connect(svc, server.local_address())
    with pytest.raises(SocketError) as info:
        sock.start_connect(svc, server.local_address())
    assert info.value.code is ErrorCode.CONCURRENCY_CONFLICT


def test_explicitly_bound_client_connects(svc: GuestNetwork) -> None:
    server = listen(svc)
    client = svc.create_tcp_socket(V4)
    client.start_bind(svc, addr("127.0.0.1", 0))
    client.finish_bind()
    bound = client.local_address()
    client.start_connect(svc, server.local_address())
    client.finish_connect()
    accepted, _, _ = server.accept()
    assert client.local_address() == bound == accepted.remote_address()


def test_shutdown_is_idempotent_and_half_closes(svc: GuestNetwork) -> None:
    server = listen(svc)
    client, cins, couts = connect(svc, server.local_address())
    accepted, ains, aouts = server.accept()
    couts.write(b"request")
    client.shutdown(ShutdownType.SEND)
    client.shutdown(ShutdownType.SEND)
    with pytest.raises(StreamClosed):
        couts.check_write()
    with pytest.raises(StreamClosed):
        couts.write(b"x")
    with pytest.raises(StreamClosed):
        couts.flush()
    assert read_all(ains) == b"request"
    with pytest.raises(StreamClosed):
        ains.read(10)
    aouts.write(b"response")  # the other direction still works
    assert cins.read(100) == b"response"
    client.shutdown(ShutdownType.RECEIVE)
    client.shutdown(ShutdownType.BOTH)
    with pytest.raises(StreamClosed):
        cins.read(0)
    aouts.write(b"discarded")  # the peer may still write; the bytes are dropped
    accepted.shutdown(ShutdownType.BOTH)


def test_shutdown_receive_discards_buffered_data(svc: GuestNetwork) -> None:
    server = listen(svc)
    client, cins, _ = connect(svc, server.local_address())
    _, _, aouts = server.accept()
    aouts.write(b"Lorem ipsum dolor sit amet")
    assert cins.ready()
    client.shutdown(ShutdownType.RECEIVE)
    with pytest.raises(StreamClosed):
        cins.read(10)


def test_remote_shutdown_then_drop_closes_the_input(svc: GuestNetwork) -> None:
    server = listen(svc)
    _client, cins, _ = connect(svc, server.local_address())
    accepted, ains, aouts = server.accept()
    accepted.shutdown(ShutdownType.BOTH)
    ains.close()
    aouts.close()
    accepted.close()
    assert cins.ready()
    with pytest.raises(StreamClosed):
        cins.read(10)
    with pytest.raises(StreamClosed):
        cins.read(0)


def test_connection_lives_until_socket_and_streams_are_dropped(svc: GuestNetwork) -> None:
    server = listen(svc)
    client, cins, couts = connect(svc, server.local_address())
    _, ains, _ = server.accept()
    client.close()  # streams still alive: the connection stays open
    couts.write(b"still here")
    assert ains.read(100) == b"still here"
    cins.close()
    couts.close()
    with pytest.raises(StreamClosed):
        ains.read(10)


def test_socket_options_validate_clamp_and_read_back(svc: GuestNetwork) -> None:
    sock = svc.create_tcp_socket(V4)
    assert sock.keep_alive_idle_time() > 0 and sock.keep_alive_count() > 0
    assert sock.hop_limit() > 0 and sock.receive_buffer_size() == 65536
    for setter in (
        sock.set_keep_alive_idle_time,
        sock.set_keep_alive_interval,
        sock.set_keep_alive_count,
        sock.set_hop_limit,
        sock.set_receive_buffer_size,
        sock.set_send_buffer_size,
    ):
        with pytest.raises(SocketError) as info:
            setter(0)
        assert info.value.code is ErrorCode.INVALID_ARGUMENT
    sock.set_keep_alive_idle_time(1)
    assert 0 < sock.keep_alive_idle_time() <= SECOND
    sock.set_keep_alive_interval(2**64 - 1)
    sock.set_keep_alive_count(2**32 - 1)
    sock.set_receive_buffer_size(2**64 - 1)
    sock.set_keep_alive_enabled(True)
    assert sock.keep_alive_enabled() is True
    sock.set_keep_alive_idle_time(42 * SECOND)
    sock.set_keep_alive_interval(42 * SECOND)
    sock.set_keep_alive_count(42)
    sock.set_hop_limit(42)
    sock.set_receive_buffer_size(0x10000)
    sock.set_send_buffer_size(0x10000)
    assert (
        sock.keep_alive_idle_time(),
        sock.keep_alive_interval(),
        sock.keep_alive_count(),
        sock.hop_limit(),
        sock.receive_buffer_size(),
        sock.send_buffer_size(),
    ) == (42 * SECOND, 42 * SECOND, 42, 42, 0x10000, 0x10000)


def test_accepted_sockets_inherit_options_set_after_listen(svc: GuestNetwork) -> None:
    server = listen(svc)
    server.set_keep_alive_enabled(True)
    server.set_hop_limit(42)
    server.set_send_buffer_size(0x10000)
    connect(svc, server.local_address())
    accepted, _, _ = server.accept()
    server.set_hop_limit(43)  # later changes do not reach accepted sockets
    assert accepted.keep_alive_enabled() is True
    assert accepted.hop_limit() == 42
    assert accepted.send_buffer_size() == 0x10000


def test_socket_budget_gives_new_socket_limit_and_charges_the_connecting_guest() -> None:
    net = VirtualNetwork("capped", NetworkPolicy(max_sockets=3))
    svc = net.attach("svc", Role.SERVICE)
    client = net.attach("client", Role.COMPONENT, max_sockets=4)
    server = listen(svc)
    connect(client, server.local_address())  # the client's socket + the one svc accepts
    assert client.budget.used == 2 and svc.budget.used == 1
    connect(client, server.local_address())  # the second one stays queued
    with pytest.raises(SocketError) as info:
        client.create_tcp_socket(V4)
    assert info.value.code is ErrorCode.NEW_SOCKET_LIMIT
    assert svc.budget.used == 1, "connections cost the listener's guest nothing"
    accepted, _, _ = server.accept()
    assert accepted.guest is svc and client.budget.used == 4
    svc.create_tcp_socket(V4)  # svc's own room is untouched
    svc.create_tcp_socket(V4)
    with pytest.raises(SocketError) as info:
        svc.create_tcp_socket(V4)
    assert info.value.code is ErrorCode.NEW_SOCKET_LIMIT
    # no room for the accepted socket: the connect is refused, nothing is queued
    probe = net.attach("probe", Role.COMPONENT, max_sockets=1)
    sock = probe.create_tcp_socket(V4)
    sock.start_connect(probe, server.local_address())
    with pytest.raises(SocketError) as info:
        sock.finish_connect()
    assert info.value.code is ErrorCode.CONNECTION_REFUSED
    server.close()  # the queued connection's reserved socket goes back to the client
    assert client.budget.used == 3
    accepted.close()
    assert client.budget.used == 2


def test_repr_and_statistics_show_counts(net: VirtualNetwork, svc: GuestNetwork) -> None:
    server = listen(svc, 8080)
    connect(svc, server.local_address())
    assert "listening" in repr(server) and "queued=1/128" in repr(server)
    stats = net.statistics()
    assert stats.tcp_listening == (8080,)
    assert stats.sockets == 2 and stats.connections == 1
    assert "sockets=2" in repr(net) and "listening=1" in repr(net)
    svc.close()
    assert net.statistics().sockets == 0 and net.tcp_ports.ports() == []


def test_docs_show_the_diagram_generated_from_the_table() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "network.md").read_text()
    assert state_diagram() in doc


def test_client_port_is_held_while_its_streams_live(net: VirtualNetwork, svc: GuestNetwork) -> None:
    server = listen(svc)
    client, cins, couts = connect(svc, server.local_address())
    port = client.local_address().port
    client.close()
    assert port in net.tcp_ports
    cins.close()
    couts.close()
    assert port not in net.tcp_ports


def test_closing_a_guest_closes_its_connections_even_with_live_streams(
    net: VirtualNetwork, svc: GuestNetwork
) -> None:
    comp = net.attach("comp#1", Role.COMPONENT)
    server = listen(svc)
    _client, _cins, couts = connect(comp, server.local_address())
    _, ains, _ = server.accept()
    couts.write(b"half a request")
    comp.close()  # the instance trapped or finished: streams were never dropped
    assert ains.read(100) == b"half a request"
    with pytest.raises(StreamClosed):
        ains.read(100)
    assert comp not in net.guests
    assert net.statistics().sockets == 2  # the listener and the accepted socket


def test_addresses_are_checked_and_written_the_same_however_often_they_are_built() -> None:
    # Valid address tuples and their text are remembered; an address valid for
    # one family stays invalid for the other, and a bad one stays bad.
    for _ in range(2):
        assert str(SocketAddress(V4, (127, 0, 0, 1), 80)) == "127.0.0.1:80"
        assert SocketAddress(V6, (0,) * 7 + (1,), 80).to_sockaddr() == ("::1", 80, 0, 0)
        assert str(IpAddress(V6, (0x2001, 0xDB8, 0, 0, 0, 0, 0, 1))) == "2001:db8::1"
        with pytest.raises(ValueError):
            IpAddress(V6, (127, 0, 0, 1))
        with pytest.raises(ValueError):
            SocketAddress(V4, (0,) * 8, 80)
        with pytest.raises(ValueError):
            SocketAddress(V4, (256, 0, 0, 1), 80)
        with pytest.raises(ValueError):
            SocketAddress(V4, (127, 0, 0, 1), 65536)
    assert {S.UNBOUND: 1}[S.UNBOUND] == 1 and hash(V4) != hash(V6)
