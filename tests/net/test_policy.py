"""Policy: default deny, roles, private ephemeral ports, the address-check hook."""

from __future__ import annotations

import logging

import msgspec
import pytest

from fabric.net import (
    EgressRule,
    ErrorCode,
    IngressRule,
    NetworkPolicy,
    OutgoingDatagram,
    Role,
    SocketAddress,
    SocketAddrUse,
    SocketError,
    VirtualNetwork,
)

from .helpers import V4, addr, connect, listen


def test_component_may_not_bind_a_fixed_port_and_the_refusal_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    net = VirtualNetwork("shop")
    comp = net.attach("checkout#7", Role.COMPONENT)
    sock = comp.create_tcp_socket(V4)
    with caplog.at_level(logging.WARNING, logger="fabric.net"):
        with pytest.raises(SocketError) as info:
            sock.start_bind(comp, addr("127.0.0.1", 8080))
    assert info.value.code is ErrorCode.ACCESS_DENIED
    (record,) = [r for r in caplog.records if r.name == "fabric.net"]
    message = record.getMessage()
    assert "workload=shop" in message and "guest=checkout#7" in message
    assert "127.0.0.1:8080" in message and "tcp-bind" in message
    assert net.statistics().denied == 1
    with pytest.raises(SocketError) as info:  # port 0 off loopback: refused too
        sock.start_bind(comp, addr("10.0.0.1", 0))
    assert info.value.code is ErrorCode.ACCESS_DENIED


def test_component_socketpair_emulation_works_and_its_port_is_private() -> None:
    """What CPython's asyncio does at loop start, with no socketpair()."""
    net = VirtualNetwork("shop")
    comp = net.attach("checkout#7", Role.COMPONENT)
    lsock = comp.create_tcp_socket(V4)
    lsock.start_bind(comp, addr("127.0.0.1", 0))
    lsock.finish_bind()
    lsock.start_listen()
    lsock.finish_listen()
    port = lsock.local_address().port
    csock, cins, couts = connect(comp, addr("127.0.0.1", port))
    ssock, sins, souts = lsock.accept()
    assert ssock.local_address() == csock.remote_address()
    assert csock.local_address() == ssock.remote_address()
    couts.write(b"\0")
    souts.write(b"\1")
    assert (sins.read(1), cins.read(1)) == (b"\0", b"\1")

    # nobody else reaches that port: not another instance, a service, or native code
    for other in (net.attach("checkout#8", Role.COMPONENT), net.attach("db", Role.SERVICE)):
        sock = other.create_tcp_socket(V4)
        sock.start_connect(other, addr("127.0.0.1", port))
        with pytest.raises(SocketError) as info:
            sock.finish_connect()
        assert info.value.code is ErrorCode.CONNECTION_REFUSED
    assert not net.is_listening(port)
    assert net.is_listening(port, comp)


def test_component_connects_to_a_service_port() -> None:
    net = VirtualNetwork("shop")
    svc = net.attach("dbpool", Role.SERVICE)
    comp = net.attach("checkout#1", Role.COMPONENT)
    server = listen(svc, 7432)
    _, _, outs = connect(comp, addr("127.0.0.1", 7432))
    outs.write(b"hello")
    _, ins, _ = server.accept()
    assert ins.read(10) == b"hello"


@pytest.mark.parametrize("role", [Role.COMPONENT, Role.SERVICE])
def test_non_loopback_destination_without_egress_rule_is_denied(role: Role) -> None:
    net = VirtualNetwork("shop")
    guest = net.attach("g", role)
    sock = guest.create_tcp_socket(V4)
    with pytest.raises(SocketError) as info:
        sock.start_connect(guest, addr("93.184.216.34", 443))
    assert info.value.code is ErrorCode.ACCESS_DENIED
    udp = guest.create_udp_socket(V4)
    udp.start_bind(guest, addr("127.0.0.1", 0))
    udp.finish_bind()
    with pytest.raises(SocketError) as info:
        udp.stream(addr("93.184.216.34", 53))
    assert info.value.code is ErrorCode.ACCESS_DENIED
    _, out = udp.stream(None)
    out.check_send()
    with pytest.raises(SocketError) as info:
        out.send([OutgoingDatagram(b"q", addr("93.184.216.34", 53))])
    assert info.value.code is ErrorCode.ACCESS_DENIED


def test_component_private_udp_port_drops_datagrams_from_other_guests() -> None:
    net = VirtualNetwork("shop")
    comp = net.attach("c", Role.COMPONENT)
    svc = net.attach("s", Role.SERVICE)
    receiver = comp.create_udp_socket(V4)
    receiver.start_bind(comp, addr("127.0.0.1", 0))
    receiver.finish_bind()
    incoming, _ = receiver.stream(None)
    target = receiver.local_address()
    for sender_guest in (svc, comp):
        sender = sender_guest.create_udp_socket(V4)
        sender.start_bind(sender_guest, addr("127.0.0.1", 0))
        sender.finish_bind()
        _, out = sender.stream(None)
        out.check_send()
        assert out.send([OutgoingDatagram(sender_guest.name.encode(), target)]) == 1
    assert [d.data for d in incoming.receive(10)] == [b"c"]
    assert net.statistics().datagrams_dropped == 1


def test_address_check_hook_is_consulted_with_address_and_use() -> None:
    seen: list[tuple[SocketAddress, SocketAddrUse]] = []

    def no_ssh(address: SocketAddress, use: SocketAddrUse) -> bool:
        seen.append((address, use))
        return address.port != 22

    net = VirtualNetwork("w", check=no_ssh)
    svc = net.attach("svc", Role.SERVICE)
    listen(svc, 8000)
    sock = svc.create_tcp_socket(V4)
    with pytest.raises(SocketError) as info:
        sock.start_bind(svc, addr("127.0.0.1", 22))
    assert info.value.code is ErrorCode.ACCESS_DENIED
    assert (addr("127.0.0.1", 8000), SocketAddrUse.TCP_BIND) in seen
    assert seen[-1] == (addr("127.0.0.1", 22), SocketAddrUse.TCP_BIND)


def test_an_extra_check_cannot_widen_the_policy() -> None:
    net = VirtualNetwork("w", check=lambda a, u: True)
    svc = net.attach("svc", Role.SERVICE)
    sock = svc.create_tcp_socket(V4)  # the policy refuses; the extra check allows
    with pytest.raises(SocketError) as info:
        sock.start_connect(svc, addr("10.1.2.3", 80))
    assert info.value.code is ErrorCode.ACCESS_DENIED  # both checks must allow
    net2 = VirtualNetwork("w2", NetworkPolicy(egress=(EgressRule("10.1.2.3", 81, "h", 1),)))
    svc2 = net2.attach("svc", Role.SERVICE)
    sock2 = svc2.create_tcp_socket(V4)
    with pytest.raises(SocketError) as info:  # the rule covers port 81, not 80
        sock2.start_connect(svc2, addr("10.1.2.3", 80))
    assert info.value.code is ErrorCode.ACCESS_DENIED


def test_udp_can_be_disabled() -> None:
    net = VirtualNetwork("w", NetworkPolicy(allow_udp=False))
    with pytest.raises(SocketError) as info:
        net.attach("svc", Role.SERVICE).create_udp_socket(V4)
    assert info.value.code is ErrorCode.ACCESS_DENIED


def test_policy_is_a_msgspec_struct_with_validation() -> None:
    raw = {
        "egress": [
            {
                "destination": "mariadb",
                "port": 3306,
                "target_host": "127.0.0.1",
                "target_port": 3306,
            }
        ],
        "ingress": [{"port": 8080, "host_port": 18080}],
        "names": {"dbpool": "127.0.0.1"},
        "max_sockets": 64,
    }
    policy = msgspec.convert(raw, NetworkPolicy)
    assert policy.egress[0].destination_ip is None
    assert policy.ingress[0] == IngressRule(port=8080, host_port=18080)
    assert msgspec.json.decode(msgspec.json.encode(policy), type=NetworkPolicy) == policy
    for bad in (
        {"egress": [{"destination": "x", "port": 0, "target_host": "h", "target_port": 1}]},
        {"names": {"x": "not-an-ip"}},
        {"names": {"bad name": "127.0.0.1"}},
        {"egress": [{"destination": "a b", "port": 1, "target_host": "h", "target_port": 1}]},
        {"max_sockets": 0},
        {"unknown": 1},
    ):
        with pytest.raises((msgspec.ValidationError, ValueError)):
            msgspec.convert(bad, NetworkPolicy)
