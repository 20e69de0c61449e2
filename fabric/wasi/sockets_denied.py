"""``wasi:sockets`` with a deny-all policy.

Used when a guest has no network at all: sockets can be created, but every
bind, connect and name lookup is refused with ``access-denied``; other
operations answer as an unbound socket would (``invalid-state``).
"""

from __future__ import annotations

from typing import Any

from fabric.engine import Err, HostInterface, HostResource


class Network(HostResource):
    """``wasi:sockets/network.network``."""


class DeniedTcpSocket(HostResource):
    def __init__(self, family: str) -> None:
        self.family = family


class DeniedUdpSocket(HostResource):
    def __init__(self, family: str) -> None:
        self.family = family


class _Unused(HostResource):
    """Resource types a denied guest can never obtain."""


class IncomingDatagramStream(_Unused):
    pass


class OutgoingDatagramStream(_Unused):
    pass


class ResolveAddressStream(_Unused):
    pass


TCP_METHODS = (
    "accept address-family finish-bind finish-connect finish-listen hop-limit is-listening "
    "keep-alive-count keep-alive-enabled keep-alive-idle-time keep-alive-interval local-address "
    "receive-buffer-size remote-address send-buffer-size set-hop-limit set-keep-alive-count "
    "set-keep-alive-enabled set-keep-alive-idle-time set-keep-alive-interval "
    "set-listen-backlog-size set-receive-buffer-size set-send-buffer-size shutdown start-bind "
    "start-connect start-listen subscribe"
).split()
UDP_METHODS = (
    "address-family finish-bind local-address receive-buffer-size remote-address "
    "send-buffer-size set-receive-buffer-size set-send-buffer-size set-unicast-hop-limit "
    "start-bind stream subscribe unicast-hop-limit"
).split()


def _denied(*_: Any) -> None:
    raise Err("access-denied")


def _invalid_state(*_: Any) -> None:
    raise Err("invalid-state")


def _method(name: str) -> Any:
    if name in ("start-bind", "start-connect"):
        return _denied
    if name == "address-family":
        return lambda cx, s: s.family
    if name == "is-listening":
        return lambda cx, s: False
    if name == "subscribe":
        from .io import Pollable

        async def never() -> None:
            return None

        return lambda cx, s: Pollable(lambda: True, never)
    return _invalid_state


def interfaces(version: str) -> list[HostInterface]:
    net = HostInterface(f"wasi:sockets/network@{version}")
    net.resource("network", Network)
    inst = HostInterface(f"wasi:sockets/instance-network@{version}")
    inst.func("instance-network", lambda cx: Network())
    tcp = HostInterface(f"wasi:sockets/tcp@{version}")
    tcp.resource("tcp-socket", DeniedTcpSocket)
    for m in TCP_METHODS:
        tcp.func(f"[method]tcp-socket.{m}", _method(m))
    tcpc = HostInterface(f"wasi:sockets/tcp-create-socket@{version}")
    tcpc.func("create-tcp-socket", lambda cx, fam: DeniedTcpSocket(fam))
    udp = HostInterface(f"wasi:sockets/udp@{version}")
    udp.resource("udp-socket", DeniedUdpSocket)
    udp.resource("incoming-datagram-stream", IncomingDatagramStream)
    udp.resource("outgoing-datagram-stream", OutgoingDatagramStream)
    for m in UDP_METHODS:
        udp.func(f"[method]udp-socket.{m}", _method(m))
    udp.func("[method]incoming-datagram-stream.receive", _invalid_state)
    udp.func("[method]incoming-datagram-stream.subscribe", _method("subscribe"))
    udp.func("[method]outgoing-datagram-stream.check-send", _invalid_state)
    udp.func("[method]outgoing-datagram-stream.send", _invalid_state)
    udp.func("[method]outgoing-datagram-stream.subscribe", _method("subscribe"))
    udpc = HostInterface(f"wasi:sockets/udp-create-socket@{version}")
    udpc.func("create-udp-socket", lambda cx, fam: DeniedUdpSocket(fam))
    lookup = HostInterface(f"wasi:sockets/ip-name-lookup@{version}")
    lookup.resource("resolve-address-stream", ResolveAddressStream)
    lookup.func("resolve-addresses", _denied)
    lookup.func("[method]resolve-address-stream.resolve-next-address", _invalid_state)
    lookup.func("[method]resolve-address-stream.subscribe", _method("subscribe"))
    return [net, inst, tcp, tcpc, udp, udpc, lookup]
