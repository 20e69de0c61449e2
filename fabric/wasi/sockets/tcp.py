"""``wasi:sockets/tcp`` and ``tcp-create-socket`` over ``fabric.net.TcpSocket``.

Each WIT method is one ``TcpSocket`` method (same name, ``_`` for ``-``);
this module converts addresses and enums and wraps the connection's two
streams as ``wasi:io`` streams:

- ``TcpIn`` (``input-stream``): ``read`` returns what the pipe holds,
  ``closed`` at EOF; a reset connection is ``last-operation-failed`` with an
  ``IoError`` whose ``code`` is ``connection-reset`` (what
  ``network-error-code`` answers), then ``closed``;
- ``TcpOut`` (``output-stream``): ``check-write`` is the room under the
  pipe's high-water mark (0 under backpressure), at most 64 KiB as in
  wasmtime (reads return at most 64 KiB too), a write above it traps, a
  write to a peer that went away is ``last-operation-failed``
  (``connection-reset``), then ``closed``. Its pollable is ready then but
  does not report the reset: the first ``check-write`` or ``write`` after
  it does, however the guest's calls and the reset interleave, as with
  wasmtime's socket output stream, whose readiness only waits.

Both are children of their socket, and every pollable is a child of what it
watches (see ``_common``).
"""

from __future__ import annotations

from typing import Any, NoReturn

from fabric.engine import HostInterface, TrapError
from fabric.net import (
    ShutdownType,
    SocketError,
    TcpInputStream,
    TcpOutputStream,
    TcpSocket,
)
from fabric.net import StreamClosed as NetClosed

from ..io import (
    InputStream,
    OutputStream,
    Pollable,
    StreamClosed,
    StreamFailed,
    stream_error,
)
from ._common import (
    SHARED_METHODS,
    ChildPollable,
    Parent,
    SocketResource,
    WitSocketAddress,
    family,
    guest_errors,
    passthrough,
    to_address,
)
from .network import Network, guest_network

__all__ = ["MAX_CHUNK", "TCP_METHODS", "TcpIn", "TcpOut", "TcpSocketResource", "interfaces"]

#: The most one ``read`` returns and one ``check-write`` permits: wasmtime's
#: ``MAX_READ_SIZE_ALLOC``. It also keeps each ``list<u8>`` crossing the
#: component boundary in the size range the C API moves fastest (bytes cross as one
#: 32-byte value each; see docs/architecture.md).
MAX_CHUNK = 64 * 1024


class TcpSocketResource(SocketResource):
    """``tcp-socket``."""

    kind = "tcp-socket"

    def __init__(self, sock: TcpSocket) -> None:
        self.sock = sock


def _stream_failure(e: NetClosed | SocketError) -> StreamClosed | StreamFailed:
    if isinstance(e, NetClosed):
        return StreamClosed()
    return StreamFailed(str(e), e.code.value)


def _raise_stream_error(e: NetClosed | SocketError) -> NoReturn:
    """The WIT ``stream-error`` of a failed read or write."""
    raise stream_error(_stream_failure(e)) from None


class TcpIn(Parent, InputStream):
    """The ``input-stream`` of a connected socket (a child of it).

    ``read`` goes straight to the pipe end (one of the hot host calls)."""

    kind = "input-stream"

    def __init__(self, stream: TcpInputStream, parent: TcpSocketResource) -> None:
        self._s = stream
        self._end = stream.end
        self._parent: TcpSocketResource | None = parent
        parent.adopt()

    def read(self, n: int) -> bytes:
        try:
            return self._end.read(n if n < MAX_CHUNK else MAX_CHUNK)
        except (NetClosed, SocketError) as e:
            _raise_stream_error(e)

    def _read(self, n: int) -> bytes:
        try:
            return self._end.read(n if n < MAX_CHUNK else MAX_CHUNK)
        except (NetClosed, SocketError) as e:
            raise _stream_failure(e) from None

    def _readable(self) -> bool:
        return self._s.ready()

    async def _wait_readable(self) -> None:
        await self._s.wait_ready()

    def subscribe(self) -> Pollable:
        end = self._end  # the pipe end's own methods: no wrapper frames per check
        return ChildPollable(end.readable, end.wait_readable, self, end.watch_readable)

    def close(self) -> None:
        self._s.close()
        parent, self._parent = self._parent, None
        if parent is not None:
            parent.disown()


class TcpOut(Parent, OutputStream):
    """The ``output-stream`` of a connected socket (a child of it).

    ``check-write`` and ``write`` go straight to the pipe end, and ``write``
    computes its permit once (hot host calls)."""

    kind = "output-stream"

    def __init__(self, stream: TcpOutputStream, parent: TcpSocketResource) -> None:
        self._s = stream
        self._end = stream.end
        self._parent: TcpSocketResource | None = parent
        parent.adopt()

    def check_write(self) -> int:
        try:
            room = self._end.check_write()
        except (NetClosed, SocketError) as e:
            _raise_stream_error(e)
        return room if room < MAX_CHUNK else MAX_CHUNK

    def write(self, data: bytes) -> None:
        end = self._end
        try:
            room = end.check_write()
        except (NetClosed, SocketError) as e:
            _raise_stream_error(e)
        if len(data) > room or len(data) > MAX_CHUNK:
            permitted = room if room < MAX_CHUNK else MAX_CHUNK
            raise TrapError(
                f"output-stream.write of {len(data)} bytes exceeds check-write ({permitted})"
            )
        if data:
            end.write_permitted(data)

    def _check_write(self) -> int:
        try:
            return min(self._end.check_write(), MAX_CHUNK)
        except (NetClosed, SocketError) as e:
            raise _stream_failure(e) from None

    def _write(self, data: bytes) -> None:
        try:
            self._s.write(data)
        except (NetClosed, SocketError) as e:
            raise _stream_failure(e) from None

    def _write_permitted(self, data: bytes) -> None:
        # ``write`` checked ``data`` against this step's permit already.
        self._end.write_permitted(data)

    def _flush(self) -> None:
        try:
            self._s.flush()
        except (NetClosed, SocketError) as e:
            raise _stream_failure(e) from None

    def _writable(self) -> bool:
        return self._s.ready()

    async def _wait_writable(self) -> None:
        await self._s.wait_ready()

    def subscribe(self) -> Pollable:
        end = self._end  # the pipe end's own methods: no wrapper frames per check
        return ChildPollable(end.writable, end.wait_writable, self, end.watch_writable)

    def _subscribe_ready(self) -> bool:
        # Ready when ``check-write`` would permit bytes or fail; asking never
        # takes a reset's one report (``PipeEnd.writable``), so the next
        # ``check-write`` or ``write`` gets it whenever the guest polled.
        return self._end.writable()

    def close(self) -> None:
        if not self._s.closed:
            # Dropping the output stream is a FIN, as wasmtime's send stream
            # shuts its socket down for writing when dropped.
            self._s.end.shutdown_send()
        self._s.close()
        parent, self._parent = self._parent, None
        if parent is not None:
            parent.disown()


def _streams(
    res: TcpSocketResource, pair: tuple[TcpInputStream, TcpOutputStream]
) -> tuple[TcpIn, TcpOut]:
    return TcpIn(pair[0], res), TcpOut(pair[1], res)


# --- the WIT functions ------------------------------------------------------------
def _create(cx: Any, fam: str) -> TcpSocketResource:
    return TcpSocketResource(guest_network(cx).create_tcp_socket(family(fam)))


def _start_connect(cx: Any, s: TcpSocketResource, net: Network, addr: WitSocketAddress) -> None:
    s.sock.start_connect(net.handle(), to_address(addr))


def _finish_connect(cx: Any, s: TcpSocketResource) -> tuple[TcpIn, TcpOut]:
    return _streams(s, s.sock.finish_connect())


def _accept(cx: Any, s: TcpSocketResource) -> tuple[TcpSocketResource, TcpIn, TcpOut]:
    sock, inp, out = s.sock.accept()
    child = TcpSocketResource(sock)
    i, o = _streams(child, (inp, out))
    return child, i, o


def _shutdown(cx: Any, s: TcpSocketResource, how: str) -> None:
    s.sock.shutdown(ShutdownType(how))


#: methods whose arguments and results need no conversion
_PLAIN = (
    "finish-bind start-listen finish-listen is-listening set-listen-backlog-size "
    "keep-alive-enabled set-keep-alive-enabled keep-alive-idle-time set-keep-alive-idle-time "
    "keep-alive-interval set-keep-alive-interval keep-alive-count set-keep-alive-count "
    "hop-limit set-hop-limit receive-buffer-size set-receive-buffer-size send-buffer-size "
    "set-send-buffer-size"
).split()

_CONVERTED: dict[str, Any] = {
    **SHARED_METHODS,
    "start-connect": _start_connect,
    "finish-connect": _finish_connect,
    "accept": _accept,
    "shutdown": _shutdown,
}

#: every method of ``tcp-socket`` in the WIT
TCP_METHODS = tuple(sorted([*_PLAIN, *_CONVERTED]))


def interfaces(version: str) -> list[HostInterface]:
    tcp = HostInterface(f"wasi:sockets/tcp@{version}")
    tcp.resource("tcp-socket", TcpSocketResource)
    m = "[method]tcp-socket."
    for name in _PLAIN:
        tcp.func(m + name, guest_errors(passthrough(name)))
    for name, impl in _CONVERTED.items():
        tcp.func(m + name, guest_errors(impl))
    create = HostInterface(f"wasi:sockets/tcp-create-socket@{version}")
    create.func("create-tcp-socket", guest_errors(_create))
    return [tcp, create]
