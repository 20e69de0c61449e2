"""Pipe pairs: the in-memory connection between two TCP endpoints.

Theory of operation
-------------------
A connection is two `_Channel`s, one per direction. A channel is a queue of
`bytes` chunks with a high-water mark (256 KiB by default). Each side holds
a `PipeEnd`: it writes into its outbound channel and reads from its inbound
one. Nothing here touches a loop except the `Notifier`s that wake waiters.

Writing (output-stream semantics)
    `check_write()` returns how many bytes may be written now: the room
    left under the high-water mark, 0 under backpressure. `write(data)`
    with more than that is a contract violation (`NetTrap`), so a channel
    never holds more than its high-water mark, however fast the writer
    writes. `feed(data)` accepts any amount (asyncio `StreamWriter.write`
    semantics, used by native code that then awaits `drain`).

Reading (input-stream semantics)
    `read(n)` returns up to `n` buffered bytes, possibly `b""`. Once the
    peer shut down its sending side and the buffered bytes are drained,
    `read` raises `StreamClosed` (EOF).

Half-close
    `shutdown_send()` is a FIN: the peer reads what is buffered, then EOF.
    `shutdown_receive()` closes the local input (reads raise
    `StreamClosed`), discards buffered inbound bytes and silently discards
    what the peer writes later, as Linux does after SHUT_RD.

Close and reset (kernel semantics, which is what a guest sees under wasmtime)
    `close()` is a drop. If no unread inbound bytes are left, it is a
    graceful close: buffered outbound bytes stay readable by the peer,
    followed by EOF. If unread inbound bytes are discarded by the close,
    the peer gets a reset, as the kernel sends RST when a socket is closed
    with unread data. `abort()` always resets.
    A reset that follows a `shutdown_send()` is not seen by the peer's
    reads (the FIN came first: bytes, then EOF), as with a kernel socket;
    the WASI binding sends that FIN when a guest drops its output stream,
    as wasmtime does. A peer whose connection was reset reads the bytes
    already delivered, then `SocketError(connection-reset)` once, then
    `StreamClosed`; the
    WASI streams binding presents the error as
    `stream-error::last-operation-failed` with `network-error-code` =
    `connection-reset`. A writer whose peer is gone gets the same
    `connection-reset` once, then `StreamClosed`: from whichever of
    `check_write`, `write` and `feed` comes first. `writable()` (what a
    pollable asks) is true then but does not take that report, so the
    first write-side call reports the reset whatever readiness checks came
    before it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import msgspec

from .errors import ErrorCode, NetTrap, SocketError, StreamClosed
from .readiness import Notifier, wait_until

if TYPE_CHECKING:
    import asyncio

__all__ = ["DEFAULT_HIGH_WATER", "PipeEnd", "PipeStatistics", "pipe_pair"]

DEFAULT_HIGH_WATER = 256 * 1024


class _Channel:
    """One direction of a connection. Sans-IO."""

    __slots__ = (
        "chunks",
        "delivered",
        "discarding",
        "eof",
        "head",
        "high_water",
        "reader_gone",
        "readers",
        "reset",
        "size",
        "writers",
    )

    def __init__(self, high_water: int) -> None:
        self.chunks: deque[bytes] = deque()
        self.head = 0  # bytes of chunks[0] already read
        self.size = 0
        self.high_water = high_water
        self.delivered = 0  # bytes accepted from the writer
        self.eof = False  # writer shut down (FIN)
        self.reset = False  # writer aborted (RST)
        self.discarding = False  # reader shut down its receive side
        self.reader_gone = False  # reader end closed
        self.readers = Notifier()
        self.writers = Notifier()

    def push(self, data: bytes) -> None:
        self.delivered += len(data)
        if self.discarding or self.reader_gone or not data:
            return
        self.chunks.append(data)
        self.size += len(data)
        self.readers.notify()

    def pull(self, n: int) -> bytes:
        """Take up to `n` bytes (the caller checked `size > 0`).

        The head chunk is consumed through an offset, so reading a big chunk
        in small pieces copies each byte once.
        """
        chunks = self.chunks
        first = chunks[0]
        start = self.head
        avail = len(first) - start
        if avail >= n:
            if start == 0 and avail == n:
                out = first
            else:
                out = first[start : start + n]
            if avail == n:
                chunks.popleft()
                self.head = 0
            else:
                self.head = start + n
        else:
            parts = [first[start:] if start else first]
            chunks.popleft()
            self.head = 0
            want = n - avail
            while chunks and want:
                chunk = chunks[0]
                if len(chunk) <= want:
                    parts.append(chunks.popleft())
                    want -= len(chunk)
                else:
                    parts.append(chunk[:want])
                    self.head = want
                    want = 0
            out = b"".join(parts)
        was_full = self.size >= self.high_water
        self.size -= len(out)
        if was_full or self.size == 0:
            self.writers.notify()
        return out

    def clear(self) -> None:
        self.chunks.clear()
        self.head = 0
        self.size = 0
        self.writers.notify()


class PipeStatistics(msgspec.Struct, frozen=True):
    """Counters of one pipe end."""

    bytes_sent: int
    bytes_received: int
    inbound_buffered: int
    outbound_buffered: int
    high_water: int
    send_shut: bool
    receive_shut: bool
    closed: bool


class PipeEnd:
    """One side of a connection: writes go out, reads come in."""

    __slots__ = (
        "__weakref__",
        "_closed",
        "_in",
        "_out",
        "_read_error_reported",
        "_receive_shut",
        "_send_shut",
        "_write_error_reported",
        "bytes_received",
    )

    def __init__(self, inbound: _Channel, outbound: _Channel) -> None:
        self._in = inbound
        self._out = outbound
        self._send_shut = False
        self._receive_shut = False
        self._closed = False
        self._read_error_reported = False
        self._write_error_reported = False
        self.bytes_received = 0

    # -- writing -----------------------------------------------------------

    def _writable_room(self) -> int:
        """Room for a write now, or raise the stream error a write would get."""
        out = self._out
        if self._send_shut:
            raise StreamClosed("output shut down")
        if out.reader_gone:
            if self._write_error_reported:
                raise StreamClosed("peer closed the connection")
            self._write_error_reported = True
            raise SocketError(ErrorCode.CONNECTION_RESET, "peer closed the connection")
        if out.discarding:
            return out.high_water
        return max(0, out.high_water - out.size)

    #: Bytes that `write` accepts now; 0 under backpressure.
    check_write = _writable_room

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue `data`; more than `check_write()` allows is a `NetTrap`."""
        room = self._writable_room()
        if len(data) > room:
            raise NetTrap(f"write of {len(data)} bytes exceeds check-write permit of {room}")
        self._out.push(bytes(data))

    def write_permitted(self, data: bytes) -> None:
        """Queue `data` that the caller checked against `check_write()` just
        before, in the same step (the permit is not computed again)."""
        self._out.push(data)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Queue `data` ignoring the high-water mark (asyncio `write` semantics)."""
        self._writable_room()
        self._out.push(bytes(data))

    def flush(self) -> None:
        """Nothing is held back locally; raises like a write would on a closed stream."""
        if self._send_shut:
            raise StreamClosed("output shut down")

    def writable(self) -> bool:
        """`check_write()` would return > 0 or raise (the check reports nothing)."""
        out = self._out
        return self._send_shut or out.reader_gone or out.discarding or out.size < out.high_water

    def drained(self) -> bool:
        """The outbound buffer is below the high-water mark, or writing is over."""
        return self.writable()

    async def wait_writable(self) -> None:
        await wait_until(self.writable, self._out.writers)

    def watch_writable(self, fut: asyncio.Future[None]) -> None:
        """Resolve `fut` at the next change of the outbound side."""
        self._out.writers.watch(fut)

    # -- reading -----------------------------------------------------------

    def read(self, n: int) -> bytes:
        """Up to `n` buffered bytes, maybe `b""`; `StreamClosed` at EOF."""
        inb = self._in
        if self._receive_shut:
            raise StreamClosed("input shut down")
        if n <= 0:
            return b""
        if inb.size:
            data = inb.pull(n)
            self.bytes_received += len(data)
            return data
        if inb.reset:
            self._receive_shut = True
            if not self._read_error_reported:
                self._read_error_reported = True
                raise SocketError(ErrorCode.CONNECTION_RESET, "connection reset by peer")
            raise StreamClosed("connection reset")
        if inb.eof:
            self._receive_shut = True  # sticky, as wasmtime's reader
            raise StreamClosed("end of stream")
        return b""

    def readable(self) -> bool:
        """`read()` would return data or raise."""
        inb = self._in
        return self._receive_shut or inb.size > 0 or inb.eof or inb.reset

    async def wait_readable(self) -> None:
        await wait_until(self.readable, self._in.readers)

    def watch_readable(self, fut: asyncio.Future[None]) -> None:
        """Resolve `fut` at the next change of the inbound side."""
        self._in.readers.watch(fut)

    @property
    def at_eof(self) -> bool:
        """Nothing buffered and nothing more will come."""
        inb = self._in
        return inb.size == 0 and (self._receive_shut or inb.eof or inb.reset)

    @property
    def inbound_buffered(self) -> int:
        return self._in.size

    @property
    def outbound_buffered(self) -> int:
        return self._out.size

    @property
    def high_water(self) -> int:
        return self._out.high_water

    @property
    def peer_closed(self) -> bool:
        """The peer end was closed (dropped)."""
        return self._out.reader_gone

    # -- half-close, close, reset --------------------------------------------

    def shutdown_send(self) -> None:
        """FIN: the peer gets EOF after the buffered bytes. Idempotent."""
        if self._send_shut:
            return
        self._send_shut = True
        self._out.eof = True
        self._out.readers.notify()
        self._out.writers.notify()

    def shutdown_receive(self) -> None:
        """Stop reading: drop buffered inbound bytes and all later ones. Idempotent."""
        if self._receive_shut and self._in.discarding:
            return
        self._receive_shut = True
        self._in.discarding = True
        self._in.clear()
        self._in.readers.notify()

    def close(self) -> None:
        """Drop this end: graceful unless unread inbound bytes are discarded."""
        if self._closed:
            return
        self._finish(reset=self._in.size > 0)

    def abort(self) -> None:
        """Drop this end and reset the connection."""
        if self._closed:
            return
        self._finish(reset=True)

    def _finish(self, *, reset: bool) -> None:
        self._closed = True
        self._receive_shut = True
        inb, out = self._in, self._out
        inb.reader_gone = True
        inb.clear()
        inb.readers.notify()
        if reset and not out.eof:
            out.reset = True
        # A reset after our FIN (shutdown_send) is not seen by the peer's reads:
        # it has the FIN queued and reads EOF, as with a kernel socket.
        out.eof = True
        self._send_shut = True
        out.readers.notify()
        out.writers.notify()

    @property
    def closed(self) -> bool:
        return self._closed

    def statistics(self) -> PipeStatistics:
        return PipeStatistics(
            bytes_sent=self._out.delivered,
            bytes_received=self.bytes_received,
            inbound_buffered=self._in.size,
            outbound_buffered=self._out.size,
            high_water=self._out.high_water,
            send_shut=self._send_shut,
            receive_shut=self._receive_shut,
            closed=self._closed,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<PipeEnd {state} in={self._in.size} out={self._out.size}"
            f" sent={self._out.delivered} received={self.bytes_received}>"
        )


def pipe_pair(high_water: int = DEFAULT_HIGH_WATER) -> tuple[PipeEnd, PipeEnd]:
    """Two connected ends; each direction buffers at most `high_water` bytes."""
    if high_water <= 0:
        raise ValueError("high_water must be positive")
    a_to_b = _Channel(high_water)
    b_to_a = _Channel(high_water)
    return PipeEnd(b_to_a, a_to_b), PipeEnd(a_to_b, b_to_a)
