"""``wasi:sockets/tcp`` and ``tcp-create-socket`` over ``fabric.net.TcpSocket``."""

from __future__ import annotations

from typing import Any

from fabric.engine import HostInterface, TrapError
from fabric.net import ShutdownType, SocketError, TcpInputStream, TcpOutputStream, TcpSocket
from fabric.net import StreamClosed as NetClosed

from ..io import InputStream, OutputStream, Pollable, StreamClosed, StreamFailed
from ._common import Network, Parent, family, from_address, guest_errors, guest_network, to_address


class TcpSocketResource(Parent):
    kind = "tcp-socket"

    def __init__(self, sock: TcpSocket) -> None:
        self.sock = sock

    def close(self) -> None:
        self.sock.close()


class TcpIn(InputStream):
    def __init__(self, stream: TcpInputStream, parent: TcpSocketResource) -> None:
        self._s = stream
        self._parent = parent
        parent.children += 1

    def _read(self, n: int) -> bytes:
        try:
            return self._s.read(n)
        except NetClosed:
            raise StreamClosed() from None
        except SocketError as e:
            raise StreamFailed(str(e), e.code.value) from None

    def _readable(self) -> bool:
        return self._s.ready()

    async def _wait_readable(self) -> None:
        await self._s.wait_ready()

    def close(self) -> None:
        if not self._s.closed:
            self._s.close()
            self._parent.children -= 1


class TcpOut(OutputStream):
    def __init__(self, stream: TcpOutputStream, parent: TcpSocketResource) -> None:
        self._s = stream
        self._parent = parent
        parent.children += 1

    def _check_write(self) -> int:
        try:
            return self._s.check_write()
        except NetClosed:
            raise StreamClosed() from None
        except SocketError as e:
            raise StreamFailed(str(e), e.code.value) from None

    def _write(self, data: bytes) -> None:
        try:
            self._s.write(data)
        except NetClosed:
            raise StreamClosed() from None
        except SocketError as e:
            raise StreamFailed(str(e), e.code.value) from None

    def _flush(self) -> None:
        self._s.flush()

    def _writable(self) -> bool:
        return self._s.ready()

    async def _wait_writable(self) -> None:
        await self._s.wait_ready()

    def close(self) -> None:
        if not self._s.closed:
            self._s.close()
            self._parent.children -= 1


def _streams(
    res: TcpSocketResource, pair: tuple[TcpInputStream, TcpOutputStream]
) -> tuple[Any, Any]:
    return TcpIn(pair[0], res), TcpOut(pair[1], res)


def _create(cx: Any, fam: str) -> TcpSocketResource:
    return TcpSocketResource(guest_network(cx).create_tcp_socket(family(fam)))


def _start_bind(cx: Any, s: TcpSocketResource, net: Network, addr: Any) -> None:
    s.sock.start_bind(net.guest, to_address(addr))


def _start_connect(cx: Any, s: TcpSocketResource, net: Network, addr: Any) -> None:
    s.sock.start_connect(net.guest, to_address(addr))


def _finish_connect(cx: Any, s: TcpSocketResource) -> tuple[Any, Any]:
    return _streams(s, s.sock.finish_connect())


def _accept(cx: Any, s: TcpSocketResource) -> tuple[Any, Any, Any]:
    sock, inp, out = s.sock.accept()
    child = TcpSocketResource(sock)
    i, o = _streams(child, (inp, out))
    return child, i, o


def _subscribe(cx: Any, s: TcpSocketResource) -> Pollable:
    return Pollable(s.sock.ready, s.sock.wait_ready)


def _shutdown(cx: Any, s: TcpSocketResource, how: str) -> None:
    s.sock.shutdown(ShutdownType(how))


# WIT method -> (TcpSocket method, kind of argument / result conversion)
_PLAIN = (
    "finish-bind start-listen finish-listen is-listening listen-backlog-size "
    "keep-alive-enabled set-keep-alive-enabled keep-alive-idle-time set-keep-alive-idle-time "
    "keep-alive-interval set-keep-alive-interval keep-alive-count set-keep-alive-count "
    "hop-limit set-hop-limit receive-buffer-size set-receive-buffer-size send-buffer-size "
    "set-send-buffer-size set-listen-backlog-size"
).split()


def _plain(method: str) -> Any:
    attr = method.replace("-", "_")

    def call(cx: Any, s: TcpSocketResource, *args: Any) -> Any:
        return getattr(s.sock, attr)(*args)

    return call


def _local(cx: Any, s: Any) -> Any:
    return from_address(s.sock.local_address())


def _remote(cx: Any, s: Any) -> Any:
    return from_address(s.sock.remote_address())


def interfaces(version: str) -> list[HostInterface]:
    tcp = HostInterface(f"wasi:sockets/tcp@{version}")
    tcp.resource("tcp-socket", TcpSocketResource)
    m = "[method]tcp-socket."
    for name in _PLAIN:
        tcp.func(m + name, guest_errors(_plain(name)))
    tcp.func(m + "start-bind", guest_errors(_start_bind))
    tcp.func(m + "start-connect", guest_errors(_start_connect))
    tcp.func(m + "finish-connect", guest_errors(_finish_connect))
    tcp.func(m + "accept", guest_errors(_accept))
    tcp.func(m + "local-address", guest_errors(_local))
    tcp.func(m + "remote-address", guest_errors(_remote))
    tcp.func(m + "address-family", lambda cx, s: s.sock.address_family().value)
    tcp.func(m + "subscribe", _subscribe)
    tcp.func(m + "shutdown", guest_errors(_shutdown))
    create = HostInterface(f"wasi:sockets/tcp-create-socket@{version}")
    create.func("create-tcp-socket", guest_errors(_create))
    return [tcp, create]


__all__ = ["TrapError", "interfaces"]
