"""ip-name-lookup: literals, localhost, workload names, egress names, DNS by policy."""

from __future__ import annotations

import asyncio
import socket

import pytest

from fabric.net import (
    EgressRule,
    ErrorCode,
    IpAddress,
    NetworkPolicy,
    ResolveAddressStream,
    Role,
    SocketError,
    VirtualNetwork,
)
from fabric.net.names import SYNTHETIC_NETWORK

from .helpers import addr


def drain(stream: ResolveAddressStream) -> list[str]:
    out = []
    while (ip := stream.resolve_next_address()) is not None:
        out.append(str(ip))
    return out


@pytest.fixture
def net() -> VirtualNetwork:
    policy = NetworkPolicy(
        names={"dbpool": "127.0.0.1"},
        egress=(EgressRule("mariadb.internal", 3306, "127.0.0.1", 3306),),
    )
    return VirtualNetwork("names", policy)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("localhost", ["127.0.0.1", "::1"]),
        ("LocalHost.", ["127.0.0.1", "::1"]),
        ("api.localhost", ["127.0.0.1", "::1"]),
        ("127.0.0.1", ["127.0.0.1"]),
        ("10.20.30.40", ["10.20.30.40"]),
        ("::1", ["::1"]),
        ("[::1]", ["::1"]),
        ("dbpool", ["127.0.0.1"]),
        ("DBPOOL", ["127.0.0.1"]),
    ],
)
def test_static_names_resolve_at_once(net: VirtualNetwork, name: str, expected: list[str]) -> None:
    guest = net.attach("c", Role.COMPONENT)
    stream = guest.resolve_addresses(name)
    assert stream.ready()
    assert drain(stream) == expected
    assert stream.resolve_next_address() is None


def test_egress_names_get_a_synthetic_address_routed_by_the_rule(net: VirtualNetwork) -> None:
    guest = net.attach("c", Role.COMPONENT)
    (ip,) = drain(guest.resolve_addresses("mariadb.internal"))
    assert IpAddress.parse(ip).to_ip() in SYNTHETIC_NETWORK
    rule = net.egress_route(addr(ip, 3306))
    assert rule is not None and rule.target_port == 3306
    assert net.egress_route(addr(ip, 3307)) is None


def test_unknown_name_is_unresolvable_without_dns(net: VirtualNetwork) -> None:
    stream = net.attach("c", Role.COMPONENT).resolve_addresses("example.com")
    assert stream.ready()
    with pytest.raises(SocketError) as info:
        stream.resolve_next_address()
    assert info.value.code is ErrorCode.NAME_UNRESOLVABLE
    assert "failures=1" in repr(net.resolver)


@pytest.mark.parametrize("name", ["", " ", "a..b", "bad name", "x" * 64 + ".com", "a/b", "-a.com"])
def test_malformed_names_are_invalid_arguments(net: VirtualNetwork, name: str) -> None:
    with pytest.raises(SocketError) as info:
        net.attach("c", Role.COMPONENT).resolve_addresses(name)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


def test_names_added_at_runtime_and_unicode_names(net: VirtualNetwork) -> None:
    net.add_name("orders", "127.0.0.1")
    net.add_name("bücher.example", IpAddress.parse("::1"))
    guest = net.attach("c", Role.COMPONENT)
    assert drain(guest.resolve_addresses("orders")) == ["127.0.0.1"]
    assert drain(guest.resolve_addresses("BÜCHER.example")) == ["::1"]
    assert drain(guest.resolve_addresses("xn--bcher-kva.example")) == ["::1"]


async def test_dns_is_used_when_the_policy_allows_it() -> None:
    net = VirtualNetwork("dns", NetworkPolicy(allow_dns=True))
    stream = net.attach("c", Role.COMPONENT).resolve_addresses(socket.gethostname())
    if not stream.ready():
        with pytest.raises(SocketError) as info:
            stream.resolve_next_address()
        assert info.value.code is ErrorCode.WOULD_BLOCK
        await asyncio.wait_for(stream.wait_ready(), 30)
    addresses = drain(stream)
    assert addresses and all(IpAddress.parse(a) for a in addresses)
