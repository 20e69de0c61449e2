"""``wasi:sockets/udp`` and ``udp-create-socket`` over ``fabric.net.UdpSocket``."""

from __future__ import annotations

from typing import Any

from fabric.engine import HostInterface, HostResource
from fabric.net import IncomingDatagramStream, OutgoingDatagram, OutgoingDatagramStream, UdpSocket

from ..io import Pollable
from ._common import Network, Parent, family, from_address, guest_errors, guest_network, to_address


class UdpSocketResource(Parent):
    kind = "udp-socket"

    def __init__(self, sock: UdpSocket) -> None:
        self.sock = sock

    def close(self) -> None:
        self.sock.close()


class _Child(HostResource):
    def __init__(self, stream: Any, parent: UdpSocketResource) -> None:
        self.stream = stream
        self.parent = parent
        parent.children += 1
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            self.stream.close()
            self.parent.children -= 1


class IncomingStream(_Child):
    stream: IncomingDatagramStream


class OutgoingStream(_Child):
    stream: OutgoingDatagramStream


def _stream(cx: Any, s: UdpSocketResource, remote: Any) -> tuple[Any, Any]:
    inc, out = s.sock.stream(None if remote is None else to_address(remote))
    return IncomingStream(inc, s), OutgoingStream(out, s)


def _receive(cx: Any, s: IncomingStream, max_results: int) -> list[dict[str, Any]]:
    return [
        {"data": d.data, "remote-address": from_address(d.remote_address)}
        for d in s.stream.receive(max_results)
    ]


def _send(cx: Any, s: OutgoingStream, datagrams: list[dict[str, Any]]) -> int:
    batch = [
        OutgoingDatagram(
            bytes(d["data"]),
            None if d["remote-address"] is None else to_address(d["remote-address"]),
        )
        for d in datagrams
    ]
    return s.stream.send(batch)


def _plain(method: str) -> Any:
    attr = method.replace("-", "_")

    def call(cx: Any, s: UdpSocketResource, *args: Any) -> Any:
        return getattr(s.sock, attr)(*args)

    return call


def _create(cx: Any, fam: str) -> UdpSocketResource:
    return UdpSocketResource(guest_network(cx).create_udp_socket(family(fam)))


def _bind(cx: Any, s: UdpSocketResource, net: Network, addr: Any) -> None:
    s.sock.start_bind(net.guest, to_address(addr))


def _local(cx: Any, s: Any) -> Any:
    return from_address(s.sock.local_address())


def _remote(cx: Any, s: Any) -> Any:
    return from_address(s.sock.remote_address())


def interfaces(version: str) -> list[HostInterface]:
    udp = HostInterface(f"wasi:sockets/udp@{version}")
    udp.resource("udp-socket", UdpSocketResource)
    udp.resource("incoming-datagram-stream", IncomingStream)
    udp.resource("outgoing-datagram-stream", OutgoingStream)
    m = "[method]udp-socket."
    for name in (
        "finish-bind unicast-hop-limit set-unicast-hop-limit receive-buffer-size "
        "set-receive-buffer-size send-buffer-size set-send-buffer-size"
    ).split():
        udp.func(m + name, guest_errors(_plain(name)))
    udp.func(m + "start-bind", guest_errors(_bind))
    udp.func(m + "stream", guest_errors(_stream))
    udp.func(m + "local-address", guest_errors(_local))
    udp.func(m + "remote-address", guest_errors(_remote))
    udp.func(m + "address-family", lambda cx, s: s.sock.address_family().value)
    udp.func(m + "subscribe", lambda cx, s: Pollable(s.sock.ready, s.sock.wait_ready))
    i = "[method]incoming-datagram-stream."
    udp.func(i + "receive", guest_errors(_receive))
    udp.func(i + "subscribe", lambda cx, s: Pollable(s.stream.ready, s.stream.wait_ready))
    o = "[method]outgoing-datagram-stream."
    udp.func(o + "check-send", guest_errors(lambda cx, s: s.stream.check_send()))
    udp.func(o + "send", guest_errors(_send))
    udp.func(o + "subscribe", lambda cx, s: Pollable(s.stream.ready, s.stream.wait_ready))
    create = HostInterface(f"wasi:sockets/udp-create-socket@{version}")
    create.func(
        "create-udp-socket",
        guest_errors(_create),
    )
    return [udp, create]
