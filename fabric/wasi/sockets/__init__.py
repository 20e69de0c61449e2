"""``wasi:sockets`` over the workload's virtual network (``fabric.net``).

One module per interface family: ``network`` (network, instance-network),
``tcp`` (tcp, tcp-create-socket), ``udp`` (udp, udp-create-socket),
``ip_name_lookup``. Every WIT function is one call on a ``fabric.net``
object (see docs/network.md, "wasi:sockets binding"); ``_common`` holds the
error mapping, the address conversion and the parent/child rule.

What a guest reaches is ``WasiCtx.sockets``: a ``GuestNetwork`` from
``VirtualNetwork.attach(name, role)``, ``None`` (a private loopback of its
own) or :data:`NO_NETWORK`. ``WasiCtx.close()``, called when the store
closes, releases every socket the guest still holds.
"""

from __future__ import annotations

from fabric.engine import HostInterface

from . import ip_name_lookup, network, tcp, udp
from .network import NO_NETWORK, Network, guest_network, network_error_code
from .tcp import TCP_METHODS
from .udp import UDP_METHODS


def interfaces(version: str) -> list[HostInterface]:
    return [
        *network.interfaces(version),
        *tcp.interfaces(version),
        *udp.interfaces(version),
        *ip_name_lookup.interfaces(version),
    ]


__all__ = [
    "NO_NETWORK",
    "TCP_METHODS",
    "UDP_METHODS",
    "Network",
    "guest_network",
    "interfaces",
    "network_error_code",
]
