"""``wasi:sockets`` over the workload's virtual network (``fabric.net``).

One module per interface family: ``tcp`` (tcp, tcp-create-socket), ``udp``
(udp, udp-create-socket); ``network``, ``instance-network`` and
``ip-name-lookup`` are here.  Every WIT function is one call on a
``fabric.net`` object; ``_common.guest_errors`` maps its errors.
"""

from __future__ import annotations

from typing import Any

from fabric.engine import HostInterface, HostResource
from fabric.net import ResolveAddressStream

from ..io import Pollable
from . import tcp, udp
from ._common import Network, from_ip, guest_errors, guest_network


class ResolveStream(HostResource):
    def __init__(self, stream: ResolveAddressStream) -> None:
        self.stream = stream

    def close(self) -> None:
        self.stream.close()


def _next(cx: Any, s: ResolveStream) -> Any:
    ip = s.stream.resolve_next_address()
    return None if ip is None else from_ip(ip)


def interfaces(version: str) -> list[HostInterface]:
    net = HostInterface(f"wasi:sockets/network@{version}")
    net.resource("network", Network)
    inst = HostInterface(f"wasi:sockets/instance-network@{version}")
    inst.func("instance-network", lambda cx: Network(guest_network(cx)))
    lookup = HostInterface(f"wasi:sockets/ip-name-lookup@{version}")
    lookup.resource("resolve-address-stream", ResolveStream)
    lookup.func(
        "resolve-addresses",
        guest_errors(lambda cx, n, name: ResolveStream(n.guest.resolve_addresses(name))),
    )
    m = "[method]resolve-address-stream."
    lookup.func(m + "resolve-next-address", guest_errors(_next))
    lookup.func(m + "subscribe", lambda cx, s: Pollable(s.stream.ready, s.stream.wait_ready))
    return [net, inst, *tcp.interfaces(version), *udp.interfaces(version), lookup]


__all__ = ["interfaces"]
