"""``wasi:sockets/network`` and ``instance-network``: the guest's network handle.

``WasiCtx.sockets`` decides what a guest instance reaches:

- a ``fabric.net.GuestNetwork`` (from ``VirtualNetwork.attach(name, role)``,
  done by whoever creates the ``WasiCtx``): its workload's virtual network,
  under that network's policy;
- ``None``: a private loopback network of its own, created on first use, so
  that a guest run without a workload (``fabric exec``, tests) can still
  bind, listen and connect to itself (CPython's asyncio needs that at loop
  start). Everything else is denied, as for a component of a workload;
- :data:`NO_NETWORK`: no network at all, like ``wasmtime run`` without
  ``-S inherit-network``: ``create-tcp-socket`` and ``create-udp-socket``
  answer ``access-denied``, ``resolve-addresses`` answers
  ``permanent-resolver-failure``.

``network-error-code`` (an unstable function of ``wasi:sockets/network``
that wasmtime implements) tells a guest the error-code behind a stream's
``last-operation-failed`` error, ``connection-reset`` for a reset peer.
"""

from __future__ import annotations

from typing import Any

from fabric.engine import Err, HostInterface, HostResource
from fabric.net import ErrorCode, GuestNetwork, Role, SocketError, VirtualNetwork

from ..io import IoError

__all__ = [
    "NETWORK_ERROR_CODES",
    "NO_NETWORK",
    "Network",
    "NoNetwork",
    "guest_network",
    "interfaces",
    "network_error_code",
]

#: every case of ``wasi:sockets/network.error-code``
NETWORK_ERROR_CODES = frozenset(code.value for code in ErrorCode)


class NoNetwork:
    """The type of :data:`NO_NETWORK` (``WasiCtx.close()`` calls ``close()``)."""

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return "NO_NETWORK"


#: ``WasiCtx(sockets=NO_NETWORK)``: the guest gets no network at all.
NO_NETWORK = NoNetwork()


class Network(HostResource):
    """``wasi:sockets/network.network``: the guest's view of its workload's network."""

    def __init__(self, guest: GuestNetwork | None) -> None:
        self.guest = guest

    def handle(self) -> GuestNetwork:
        """The ``GuestNetwork`` (``access-denied`` for NO_NETWORK's network)."""
        if self.guest is None:
            raise SocketError(ErrorCode.ACCESS_DENIED, "the guest has no network")
        return self.guest

    def __repr__(self) -> str:
        return f"<Network {self.guest!r}>"


def guest_network(cx: Any) -> GuestNetwork:
    """The guest's network handle (``cx.sockets``); ``Err(access-denied)`` for NO_NETWORK.

    A guest whose ``cx.sockets`` is None gets a private loopback network on
    first use, attached as a component.
    """
    net = cx.sockets
    if net is None:
        private = VirtualNetwork(f"private:{cx.name}")
        net = cx.sockets = private.attach(cx.name, Role.COMPONENT)
    if isinstance(net, NoNetwork):
        raise Err(ErrorCode.ACCESS_DENIED.value)
    if not isinstance(net, GuestNetwork):
        raise TypeError(f"WasiCtx.sockets must be a GuestNetwork, None or NO_NETWORK: {net!r}")
    return net


def instance_network(cx: Any) -> Network:
    if isinstance(cx.sockets, NoNetwork):
        return Network(None)
    return Network(guest_network(cx))


def network_error_code(err: IoError) -> str | None:
    """``network-error-code``: the socket error-code a stream error carries, if any."""
    code = err.code
    return code if isinstance(code, str) and code in NETWORK_ERROR_CODES else None


def interfaces(version: str) -> list[HostInterface]:
    net = HostInterface(f"wasi:sockets/network@{version}")
    net.resource("network", Network)
    net.func("network-error-code", lambda cx, err: network_error_code(err))
    inst = HostInterface(f"wasi:sockets/instance-network@{version}")
    inst.func("instance-network", instance_network)
    return [net, inst]
