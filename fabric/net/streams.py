"""An asyncio-shaped API on the virtual network, for native Python code.

`start_server` / `open_connection` mirror `asyncio.start_server` /
`asyncio.open_connection`, and the reader and writer carry the method names
of `asyncio.StreamReader` / `asyncio.StreamWriter`. Underneath they are the
same `TcpSocket`s, listeners and pipes the WASI binding hands to guests, so
a native service and a wasm guest are peers on one loopback, and the same
policy, port table and socket cap apply to both.

A `VirtualServer` also serves connections the ingress bridge hands it
directly (`serve_direct`): a real `asyncio.StreamReader`/`StreamWriter`
pair on the accepted host socket, so a native service behind an ingress
rule reads the kernel's bytes with no splice and no pipe in between. Its
handler therefore gets either kind of stream (both have the same methods).
`native_server` finds the server behind a virtual port, after the policy
check a connect to that port would pass.

Failures are the `OSError`s asyncio raises (`ConnectionRefusedError`,
`ConnectionResetError`, `PermissionError`, `OSError(EADDRINUSE)`, ...),
translated from error codes in `errors.oserror_from_error_code`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, cast

from .address import IpAddress, SocketAddress
from .errors import ErrorCode, SocketError, StreamClosed, oserror_from_error_code
from .network import GuestNetwork
from .pipe import PipeEnd
from .policy import SocketAddrUse
from .tcp import Listener, TcpInputStream, TcpOutputStream, TcpSocket

__all__ = [
    "VirtualServer",
    "VirtualStreamReader",
    "VirtualStreamWriter",
    "native_server",
    "open_connection",
    "start_server",
]

logger = logging.getLogger("fabric.net")

READ_CHUNK = 64 * 1024
DEFAULT_LIMIT = 64 * 1024  # asyncio's default line-length limit

Handler = Callable[["VirtualStreamReader", "VirtualStreamWriter"], Awaitable[None]]
DirectHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class VirtualStreamReader:
    """`asyncio.StreamReader` over the inbound side of a pipe end."""

    def __init__(self, end: PipeEnd, *, limit: int = DEFAULT_LIMIT) -> None:
        self._end = end
        self._limit = limit
        self._buffer = bytearray()
        self._eof = False

    async def _fill(self) -> bool:
        """Get more bytes into the buffer; False at EOF."""
        if self._eof:
            return False
        end = self._end
        while True:
            try:
                data = end.read(READ_CHUNK)
            except StreamClosed:
                self._eof = True
                return False
            except SocketError as exc:
                self._eof = True
                raise oserror_from_error_code(exc.code, exc.detail) from None
            if data:
                self._buffer += data
                return True
            await end.wait_readable()

    def _take(self, n: int) -> bytes:
        with memoryview(self._buffer) as view, view[:n] as head:
            data = bytes(head)
        del self._buffer[:n]
        return data

    async def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        if n < 0:
            while await self._fill():
                pass
            return self._take(len(self._buffer))
        if self._buffer:
            return self._take(n)
        if self._eof:
            return b""
        end = self._end
        while True:  # fast path: hand the pipe's bytes over without buffering them
            try:
                data = end.read(n)
            except StreamClosed:
                self._eof = True
                return b""
            except SocketError as exc:
                self._eof = True
                raise oserror_from_error_code(exc.code, exc.detail) from None
            if data:
                return data
            await end.wait_readable()

    async def readexactly(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        while len(self._buffer) < n:
            if not await self._fill():
                partial = self._take(len(self._buffer))
                raise asyncio.IncompleteReadError(partial, n)
        return self._take(n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        if not separator:
            raise ValueError("Separator should be at least one-byte string")
        start = 0
        while True:
            index = self._buffer.find(separator, start)
            if index >= 0:
                if index + len(separator) > self._limit:
                    raise asyncio.LimitOverrunError(
                        "Separator is found, but chunk is longer than limit", index
                    )
                return self._take(index + len(separator))
            if len(self._buffer) > self._limit:
                raise asyncio.LimitOverrunError(
                    "Separator is not found, and chunk exceed the limit", len(self._buffer)
                )
            start = max(0, len(self._buffer) - len(separator) + 1)
            if not await self._fill():
                partial = self._take(len(self._buffer))
                raise asyncio.IncompleteReadError(partial, None)

    async def readline(self) -> bytes:
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError as exc:
            del self._buffer[: exc.consumed + 1]
            raise ValueError(exc.args[0]) from None

    def at_eof(self) -> bool:
        return not self._buffer and (self._eof or self._end.at_eof)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[bytes]:
        while line := await self.readline():
            yield line

    def __repr__(self) -> str:
        return f"<VirtualStreamReader buffered={len(self._buffer)} eof={self._eof}>"


class VirtualStreamWriter:
    """`asyncio.StreamWriter` over the outbound side of a pipe end."""

    def __init__(
        self,
        end: PipeEnd,
        closer: Callable[[], None],
        *,
        sockname: SocketAddress | None = None,
        peername: SocketAddress | None = None,
        sock: object | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self._end = end
        self._closer = closer
        self._closing = False
        self._error: OSError | None = None
        self._extra: dict[str, Any] = {
            "sockname": sockname.to_sockaddr() if sockname else None,
            "peername": peername.to_sockaddr() if peername else None,
            "socket": sock,
            **(extra or {}),
        }

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._error is not None:
            return
        try:
            self._end.feed(bytes(data))
        except SocketError as exc:
            self._error = oserror_from_error_code(exc.code, exc.detail)
        except StreamClosed:
            if self._end.peer_closed:
                self._error = ConnectionResetError("Connection lost")
            else:
                raise RuntimeError("Cannot call write() after write_eof()") from None

    def writelines(self, data: Iterable[bytes | bytearray | memoryview]) -> None:
        for chunk in data:
            self.write(chunk)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if not self._closing:
            self._end.shutdown_send()

    async def drain(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing:
            await asyncio.sleep(0)
            return
        await self._end.wait_writable()
        if self._end.peer_closed and self._end.outbound_buffered == 0:
            raise ConnectionResetError("Connection lost")

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._closer()

    def abort(self) -> None:
        """Close and reset the connection (`transport.abort()`)."""
        if not self._closing:
            self._end.abort()
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    async def wait_closed(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        value = self._extra.get(name)
        return default if value is None else value

    @property
    def end(self) -> PipeEnd:
        return self._end

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<VirtualStreamWriter {state} buffered={self._end.outbound_buffered}>"


class _NativeConnection:
    """A native peer's socket and streams, closed together."""

    def __init__(self, sock: TcpSocket, ins: TcpInputStream, outs: TcpOutputStream) -> None:
        self.sock, self.ins, self.outs = sock, ins, outs

    def close(self) -> None:
        self.ins.close()
        self.outs.close()
        self.sock.close()

    def streams(self) -> tuple[VirtualStreamReader, VirtualStreamWriter]:
        reader = VirtualStreamReader(self.ins.end)
        writer = VirtualStreamWriter(
            self.outs.end,
            self.close,
            sockname=self.sock.local_address(),
            peername=self.sock.remote_address(),
            sock=self.sock,
            # accepted connections: who connected, and whether from outside the workload
            extra={
                "peer_guest": self.sock.peer_guest or None,
                "peer_external": self.sock.peer_external,
            },
        )
        return reader, writer


def _addresses(guest: GuestNetwork, host: str) -> list[IpAddress]:
    try:
        found = guest.network.resolver.lookup_static(host)
    except SocketError:
        found = None
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, f"{host!r} is not known on this network")
    return found


def _oserror(exc: SocketError) -> OSError:
    return oserror_from_error_code(exc.code, exc.detail)


async def open_connection(
    guest: GuestNetwork, port: int, host: str = "127.0.0.1"
) -> tuple[VirtualStreamReader, VirtualStreamWriter]:
    """Connect as `guest` to `host:port`; try each address of `host` in turn."""
    last: SocketError | None = None
    for ip in _addresses(guest, host):
        try:
            sock = guest.create_tcp_socket(ip.family)
        except SocketError as exc:
            raise _oserror(exc) from None
        try:
            sock.start_connect(guest, SocketAddress.of(ip, port))
            await sock.wait_ready()
            ins, outs = sock.finish_connect()
        except SocketError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return _NativeConnection(sock, ins, outs).streams()
    assert last is not None
    raise _oserror(last)


async def start_server(
    guest: GuestNetwork,
    handler: Handler,
    port: int,
    *,
    host: str = "127.0.0.1",
    backlog: int = 128,
) -> VirtualServer:
    """Listen as `guest` on `host:port` and run `handler(reader, writer)` per connection."""
    ip = _addresses(guest, host)[0]
    try:
        sock = guest.create_tcp_socket(ip.family)
    except SocketError as exc:
        raise _oserror(exc) from None
    try:
        sock.set_listen_backlog_size(backlog)
        sock.start_bind(guest, SocketAddress.of(ip, port))
        sock.finish_bind()
        sock.start_listen()
        sock.finish_listen()
    except SocketError as exc:
        sock.close()
        raise _oserror(exc) from None
    server = VirtualServer(sock, handler)
    server._start()
    return server


def native_server(guest: GuestNetwork, port: int, host: str = "127.0.0.1") -> VirtualServer | None:
    """The native server `guest` would reach by connecting to `host:port`, if any.

    Runs the policy check of that connect (`PermissionError` if refused);
    None when nothing, or a guest (a wasm listener), listens there."""
    ip = _addresses(guest, host)[0]
    addr = SocketAddress.of(ip, port)
    try:
        guest.admit()
        guest.check(addr, SocketAddrUse.TCP_CONNECT)
    except SocketError as exc:
        raise _oserror(exc) from None
    if guest.network.egress_route(addr) is not None:
        return None
    binding = guest.network.tcp_ports.find(port, guest)
    listener = binding.endpoint if binding is not None else None
    if not isinstance(listener, Listener) or listener.closed:
        return None
    owner = listener.owner
    if isinstance(owner, VirtualServer) and owner.is_serving():
        return owner
    return None


class _SocketInfo:
    """What `Server.sockets` lists: enough to ask for the bound address."""

    def __init__(self, addr: SocketAddress) -> None:
        self._addr = addr

    def getsockname(self) -> tuple[Any, ...]:
        return self._addr.to_sockaddr()

    def __repr__(self) -> str:
        return f"<VirtualSocket {self._addr}>"


class VirtualServer:
    """`asyncio.Server` for a virtual listener."""

    def __init__(self, sock: TcpSocket, handler: Handler) -> None:
        self._sock = sock
        self._handler = handler
        self._address = sock.local_address()
        self._accept_task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._closed = False
        self.accepted = 0
        self.direct = 0  # of `accepted`: real connections handed over by ingress

    def _start(self) -> None:
        listener = self._sock.listener
        if listener is not None:
            listener.owner = self
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        sock = self._sock
        while not self._closed:
            await sock.wait_ready()
            while not self._closed:
                if sock.closed:  # dropped under us (the guest or network went away)
                    self._closed = True
                    return
                try:
                    child, ins, outs = sock.accept()
                except SocketError as exc:
                    if exc.code is ErrorCode.WOULD_BLOCK:
                        break
                    if exc.code is ErrorCode.NEW_SOCKET_LIMIT:
                        logger.warning("virtual server %s: %s", self._address, exc)
                        await asyncio.sleep(0.01)
                        continue
                    raise
                self.accepted += 1
                reader, writer = _NativeConnection(child, ins, outs).streams()
                task = asyncio.get_running_loop().create_task(self._run(reader, writer))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)

    async def _run(self, reader: VirtualStreamReader, writer: VirtualStreamWriter) -> None:
        try:
            await self._handler(reader, writer)
        except asyncio.CancelledError:
            writer.close()
            raise
        except Exception:
            logger.exception("virtual server %s: handler failed", self._address)
            writer.close()

    async def serve_direct(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Run the handler, in the calling task, on a real connection (the
        ingress fast path). Counted like an accepted connection; the caller
        owns the transport (closes it when this returns)."""
        self.accepted += 1
        self.direct += 1
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await cast(DirectHandler, self._handler)(reader, writer)
        except asyncio.CancelledError:
            writer.close()
            raise
        except Exception:
            logger.exception("virtual server %s: handler failed", self._address)
            writer.close()
        finally:
            if task is not None:
                self._handlers.discard(task)

    @property
    def port(self) -> int:
        return self._address.port

    @property
    def address(self) -> SocketAddress:
        return self._address

    @property
    def sockets(self) -> tuple[_SocketInfo, ...]:
        return () if self._closed else (_SocketInfo(self._address),)

    @property
    def active_handlers(self) -> int:
        return len(self._handlers)

    def is_serving(self) -> bool:
        return not self._closed

    def close(self) -> None:
        """Stop listening; connections already accepted go on."""
        if self._closed:
            return
        self._closed = True
        listener = self._sock.listener
        if listener is not None:
            listener.owner = None
        self._sock.close()
        if self._accept_task is not None:
            self._accept_task.cancel()

    async def wait_closed(self) -> None:
        if self._accept_task is not None:
            try:
                await self._accept_task
            except asyncio.CancelledError:
                if not self._accept_task.cancelled():
                    raise

    async def serve_forever(self) -> None:
        if self._accept_task is not None:
            try:
                await self._accept_task
            except asyncio.CancelledError:
                if not self._accept_task.cancelled():
                    raise

    async def __aenter__(self) -> VirtualServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving"
        return (
            f"<VirtualServer {self._address} {state} accepted={self.accepted}"
            f" direct={self.direct} handlers={len(self._handlers)}>"
        )
