"""What the wasi:sockets binding modules share: address conversion, the
error mapping (in one place), parent/child accounting, the network resource.

Guest-visible errors (``fabric.net.SocketError``) become the WIT
``error-code`` as ``Err``; contract violations (``fabric.net.NetTrap``)
trap the guest.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from fabric.engine import Err, HostResource, TrapError
from fabric.net import (
    GuestNetwork,
    IpAddress,
    IpAddressFamily,
    NetTrap,
    Role,
    SocketAddress,
    SocketError,
    VirtualNetwork,
)

F = TypeVar("F", bound=Callable[..., Any])


def guest_errors(fn: F) -> F:
    """Map ``SocketError`` to the WIT error-code and ``NetTrap`` to a trap."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except SocketError as e:
            raise Err(e.code.value) from None
        except NetTrap as e:
            raise TrapError(str(e)) from None

    return wrapper  # type: ignore[return-value]


def family(value: str) -> IpAddressFamily:
    return IpAddressFamily(value)


def to_address(value: tuple[str, dict[str, Any]]) -> SocketAddress:
    """WIT ``ip-socket-address`` -> ``SocketAddress``."""
    case, payload = value
    if case == "ipv4":
        return SocketAddress(IpAddressFamily.IPV4, tuple(payload["address"]), payload["port"])
    return SocketAddress(
        IpAddressFamily.IPV6,
        tuple(payload["address"]),
        payload["port"],
        payload["flow-info"],
        payload["scope-id"],
    )


def from_address(addr: SocketAddress) -> tuple[str, dict[str, Any]]:
    """``SocketAddress`` -> WIT ``ip-socket-address``."""
    if addr.family is IpAddressFamily.IPV4:
        return ("ipv4", {"port": addr.port, "address": tuple(addr.address)})
    return (
        "ipv6",
        {
            "port": addr.port,
            "flow-info": addr.flow_info,
            "address": tuple(addr.address),
            "scope-id": addr.scope_id,
        },
    )


def from_ip(ip: IpAddress) -> tuple[str, tuple[int, ...]]:
    return (ip.family.value, tuple(ip.address))


class Parent(HostResource):
    """A resource with child resources: dropping it while children live traps."""

    children = 0
    kind = "resource"

    def drop(self) -> None:
        if self.children:
            raise TrapError(f"{self.kind} dropped while {self.children} child resources live")
        self.close()


class Network(HostResource):
    """``wasi:sockets/network.network``: the guest's view of its workload's network."""

    def __init__(self, guest: GuestNetwork) -> None:
        self.guest = guest


def guest_network(cx: Any) -> GuestNetwork:
    """The guest's network handle; a guest with none gets a private loopback.

    A guest started without a workload (``fabric exec`` with no network
    options) still has a loopback of its own, so asyncio's self-connected
    socket pair works; everything else is denied.
    """
    net = cx.sockets
    if net is None:
        private = VirtualNetwork(cx.name)
        net = cx.sockets = private.attach(cx.name, Role.COMPONENT)
    assert isinstance(net, GuestNetwork)
    return net
