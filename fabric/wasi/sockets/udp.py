"""``wasi:sockets/udp`` and ``udp-create-socket`` over ``fabric.net.UdpSocket``.

``stream(remote?)`` returns the two datagram streams, children of the
socket; calling it again while they live traps (wasmtime: "UDP streams not
dropped yet"). ``receive`` returns at most 16 datagrams per call and
``check-send`` permits 16, as wasmtime does.
"""

from __future__ import annotations

from typing import Any

from fabric.engine import HostInterface
from fabric.net import (
    IncomingDatagramStream,
    OutgoingDatagram,
    OutgoingDatagramStream,
    UdpSocket,
)

from ..io import Pollable
from ._common import (
    SHARED_METHODS,
    ChildPollable,
    Parent,
    SocketResource,
    WitSocketAddress,
    family,
    from_address,
    guest_errors,
    passthrough,
    to_address,
)
from .network import guest_network

__all__ = [
    "MAX_DATAGRAMS",
    "UDP_METHODS",
    "IncomingStream",
    "OutgoingStream",
    "UdpSocketResource",
    "interfaces",
]

#: the most datagrams one ``receive`` returns (wasmtime's ``MAX_DATAGRAMS``)
MAX_DATAGRAMS = 16


class UdpSocketResource(SocketResource):
    """``udp-socket``."""

    kind = "udp-socket"

    def __init__(self, sock: UdpSocket) -> None:
        self.sock = sock


class _DatagramStream(Parent):
    """A datagram stream: a child of its socket, parent of its pollables."""

    def __init__(
        self, stream: IncomingDatagramStream | OutgoingDatagramStream, parent: UdpSocketResource
    ) -> None:
        self._stream = stream
        self._parent: UdpSocketResource | None = parent
        parent.adopt()

    def subscribe(self) -> Pollable:
        return ChildPollable(self._stream.ready, self._stream.wait_ready, self)

    def close(self) -> None:
        self._stream.close()
        parent, self._parent = self._parent, None
        if parent is not None:
            parent.disown()


class IncomingStream(_DatagramStream):
    """``incoming-datagram-stream``."""

    kind = "incoming-datagram-stream"
    _stream: IncomingDatagramStream

    def receive(self, max_results: int) -> list[dict[str, Any]]:
        return [
            {"data": d.data, "remote-address": from_address(d.remote_address)}
            for d in self._stream.receive(min(max_results, MAX_DATAGRAMS))
        ]


class OutgoingStream(_DatagramStream):
    """``outgoing-datagram-stream``."""

    kind = "outgoing-datagram-stream"
    _stream: OutgoingDatagramStream

    def check_send(self) -> int:
        return self._stream.check_send()

    def send(self, datagrams: list[dict[str, Any]]) -> int:
        if not datagrams:
            return 0  # wasmtime: an empty batch needs no permit
        batch = [
            OutgoingDatagram(
                bytes(d["data"]),
                None if d["remote-address"] is None else to_address(d["remote-address"]),
            )
            for d in datagrams
        ]
        return self._stream.send(batch)


# --- the WIT functions ------------------------------------------------------------
def _create(cx: Any, fam: str) -> UdpSocketResource:
    return UdpSocketResource(guest_network(cx).create_udp_socket(family(fam)))


def _stream(
    cx: Any, s: UdpSocketResource, remote: WitSocketAddress | None
) -> tuple[IncomingStream, OutgoingStream]:
    inc, out = s.sock.stream(None if remote is None else to_address(remote))
    return IncomingStream(inc, s), OutgoingStream(out, s)


_PLAIN = (
    "finish-bind unicast-hop-limit set-unicast-hop-limit receive-buffer-size "
    "set-receive-buffer-size send-buffer-size set-send-buffer-size"
).split()

_CONVERTED: dict[str, Any] = {**SHARED_METHODS, "stream": _stream}

#: every method of ``udp-socket`` in the WIT
UDP_METHODS = tuple(sorted([*_PLAIN, *_CONVERTED]))


def interfaces(version: str) -> list[HostInterface]:
    udp = HostInterface(f"wasi:sockets/udp@{version}")
    udp.resource("udp-socket", UdpSocketResource)
    udp.resource("incoming-datagram-stream", IncomingStream)
    udp.resource("outgoing-datagram-stream", OutgoingStream)
    m = "[method]udp-socket."
    for name in _PLAIN:
        udp.func(m + name, guest_errors(passthrough(name)))
    for name, impl in _CONVERTED.items():
        udp.func(m + name, guest_errors(impl))
    i = "[method]incoming-datagram-stream."
    udp.func(i + "receive", guest_errors(lambda cx, s, n: s.receive(n)))
    udp.func(i + "subscribe", lambda cx, s: s.subscribe())
    o = "[method]outgoing-datagram-stream."
    udp.func(o + "check-send", guest_errors(lambda cx, s: s.check_send()))
    udp.func(o + "send", guest_errors(lambda cx, s, datagrams: s.send(datagrams)))
    udp.func(o + "subscribe", lambda cx, s: s.subscribe())
    create = HostInterface(f"wasi:sockets/udp-create-socket@{version}")
    create.func("create-udp-socket", guest_errors(_create))
    return [udp, create]
