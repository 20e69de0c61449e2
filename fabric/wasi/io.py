"""``wasi:io`` — error, poll and streams.

Every stream in fabric (stdio, files, virtual sockets, egress sockets) is one
of two shapes, and the WIT semantics live here, once:

* :class:`InputStream` subclasses implement ``_read(n)`` (non-blocking: the
  bytes available now, possibly ``b""``; raise :class:`StreamClosed` at EOF or
  :class:`StreamFailed` on error), ``_readable()`` and ``_wait_readable()``.
* :class:`OutputStream` subclasses implement ``_check_write()`` (bytes
  accepted now; 0 under backpressure), ``_write(data)``, ``_flush()``,
  ``_flushed()``, ``_writable()`` and ``_wait_writable()``.

``blocking-*`` variants, ``splice``, ``write-zeroes`` and ``subscribe`` are
derived from those.  A :class:`Pollable` is a child of the object it watches:
it asks ``ready()`` synchronously and awaits ``wait()``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fabric.engine import Err, HostInterface, HostResource, TrapError

# The largest write ``blocking-write-and-flush`` accepts, as in wasmtime.
BLOCKING_WRITE_LIMIT = 4096
DEFAULT_READ_CHUNK = 64 * 1024


class StreamClosed(Exception):
    """The stream reached EOF (input) or its peer went away (output)."""


class StreamFailed(Exception):
    """The last operation failed; ``error`` becomes a ``wasi:io/error``."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class IoError(HostResource):
    """``wasi:io/error.error``: an opaque error with a debug string."""

    def __init__(self, message: str, code: str | None = None) -> None:
        self.message = message
        self.code = code  # e.g. a wasi:sockets or wasi:filesystem error-code

    def to_debug_string(self) -> str:
        return self.message


def stream_error(exc: BaseException) -> Err:
    """The WIT ``stream-error`` for a ``StreamClosed`` or ``StreamFailed``."""
    if isinstance(exc, StreamClosed):
        return Err(("closed", None))
    code = getattr(exc, "code", None)
    return Err(("last-operation-failed", IoError(str(exc) or type(exc).__name__, code)))


# --- pollables -------------------------------------------------------------------
#: ``watch(fut)``: resolve ``fut`` (if not done) at the next change of the source
Watch = Callable[["asyncio.Future[None]"], None]


class Pollable(HostResource):
    """``wasi:io/poll.pollable``.

    ``watch``, when the source offers it, registers a future the source
    resolves at its next change: ``poll`` over several sources then waits on
    one future instead of a task per source.
    """

    def __init__(
        self,
        ready: Callable[[], bool],
        wait: Callable[[], Awaitable[None]],
        deadline_ns: int | None = None,
        watch: Watch | None = None,
    ) -> None:
        self._ready = ready
        self._wait = wait
        #: for clock pollables: the monotonic time (ns) at which it becomes ready
        self.deadline_ns = deadline_ns
        self.watch = watch

    def ready(self) -> bool:
        return self._ready()

    async def block(self) -> None:
        while not self._ready():
            await self._wait()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _check_pollables(pollables: list[Pollable]) -> None:
    if not pollables:
        raise TrapError("poll: the list of pollables is empty")
    if len(pollables) > 0xFFFFFFFF:
        raise TrapError("poll: too many pollables")


def poll_now(pollables: list[Pollable]) -> list[int] | Awaitable[list[int]]:
    """``poll``: the ready indexes at once, or a coroutine that waits for one."""
    if not pollables or len(pollables) > 0xFFFFFFFF:
        _check_pollables(pollables)
    ready = [i for i, p in enumerate(pollables) if p._ready()]
    return ready or _poll_wait(pollables, checked=True)


async def poll(pollables: list[Pollable]) -> list[int]:
    _check_pollables(pollables)
    return await _poll_wait(pollables)


async def _poll_wait(pollables: list[Pollable], *, checked: bool = False) -> list[int]:
    """Wait until a pollable is ready; ``checked``: none was, just now."""
    while True:
        if not checked:
            ready = [i for i, p in enumerate(pollables) if p._ready()]
            if ready:
                return ready
        checked = False
        if len(pollables) == 1:
            await pollables[0].block()
            continue
        # Clock pollables become a timer on one future that every other
        # source resolves at its next change (through ``watch``, or a task
        # for a source without it): no task per pollable, no timeout scope.
        deadline: int | None = None
        others: list[Pollable] = []
        for p in pollables:
            if p.deadline_ns is None:
                others.append(p)
            elif deadline is None or p.deadline_ns < deadline:
                deadline = p.deadline_ns
        if not others:
            await asyncio.sleep(max(deadline - time.monotonic_ns(), 0) / 1e9 if deadline else 0)
            continue
        loop = asyncio.get_running_loop()
        waker: asyncio.Future[None] = loop.create_future()
        timer = None
        if deadline is not None:
            delay = max(deadline - time.monotonic_ns(), 0) / 1e9
            timer = loop.call_later(delay, _wake, waker)
        tasks: list[asyncio.Future[None]] | None = None
        try:
            for p in others:
                if p.watch is not None:
                    p.watch(waker)
                else:
                    task = asyncio.ensure_future(p._wait())
                    task.add_done_callback(functools.partial(_settle, waker=waker))
                    if tasks is None:
                        tasks = []
                    tasks.append(task)
            await waker
        finally:
            if timer is not None:
                timer.cancel()
            if not waker.done():
                waker.cancel()  # the sources it watches no longer count it
            if tasks is not None:
                for pending in tasks:
                    pending.cancel()


def _settle(task: asyncio.Future[None], waker: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failed wait is only a wake-up
    _wake(waker)


# --- streams ---------------------------------------------------------------------
class InputStream(HostResource):
    """``wasi:io/streams.input-stream``."""

    closed = False

    def _read(self, n: int) -> bytes:
        raise NotImplementedError

    def _readable(self) -> bool:
        raise NotImplementedError

    async def _wait_readable(self) -> None:
        raise NotImplementedError

    # WIT methods
    def read(self, n: int) -> bytes:
        try:
            return self._read(n)
        except (StreamClosed, StreamFailed) as e:
            raise stream_error(e) from None

    def blocking_read_now(self, n: int) -> bytes | Awaitable[bytes]:
        """``blocking-read``: the bytes at once when some are buffered, else a
        coroutine that waits for them."""
        try:
            data = self._read(n)
        except (StreamClosed, StreamFailed) as e:
            raise stream_error(e) from None
        if data or n == 0:
            return data
        return self.blocking_read(n)

    async def blocking_read(self, n: int) -> bytes:
        while True:
            try:
                data = self._read(n)
            except (StreamClosed, StreamFailed) as e:
                raise stream_error(e) from None
            if data or n == 0:
                return data
            await self._wait_readable()

    def skip(self, n: int) -> int:
        return len(self.read(n))

    async def blocking_skip(self, n: int) -> int:
        return len(await self.blocking_read(n))

    def subscribe(self) -> Pollable:
        return Pollable(self._readable, self._wait_readable)


class OutputStream(HostResource):
    """``wasi:io/streams.output-stream``."""

    def _check_write(self) -> int:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        """Start flushing what was written."""

    def _flushed(self) -> bool:
        return True

    def _writable(self) -> bool:
        raise NotImplementedError

    async def _wait_writable(self) -> None:
        raise NotImplementedError

    # WIT methods
    def check_write(self) -> int:
        try:
            return self._check_write()
        except (StreamClosed, StreamFailed) as e:
            raise stream_error(e) from None

    def write(self, data: bytes) -> None:
        try:
            permitted = self._check_write()
            if len(data) > permitted:
                raise TrapError(
                    f"output-stream.write of {len(data)} bytes exceeds check-write ({permitted})"
                )
            if data:
                self._write_permitted(data)
        except (StreamClosed, StreamFailed) as e:
            raise stream_error(e) from None

    def _write_permitted(self, data: bytes) -> None:
        """Write ``data``, already checked against this write's permit."""
        self._write(data)

    def flush(self) -> None:
        try:
            self._check_write()
            self._flush()
        except (StreamClosed, StreamFailed) as e:
            raise stream_error(e) from None

    def blocking_flush_now(self) -> Awaitable[None] | None:
        self.flush()
        return None if self._flushed() else self._blocking_flush_rest()

    async def _blocking_flush_rest(self) -> None:
        while not self._flushed():
            await self._wait_writable()
            self.check_write()  # surfaces a closed stream while waiting

    async def blocking_flush(self) -> None:
        self.flush()
        while not self._flushed():
            await self._wait_writable()
            self.check_write()  # surfaces a closed stream while waiting

    async def blocking_write_and_flush(self, data: bytes) -> None:
        result = self.blocking_write_and_flush_now(data)
        if result is not None:
            await result

    def blocking_write_and_flush_now(self, data: bytes) -> Awaitable[None] | None:
        """``blocking-write-and-flush``: done at once when the permit covers
        ``data`` and the flush completes; else a coroutine for the rest."""
        if len(data) > BLOCKING_WRITE_LIMIT:
            raise TrapError(
                f"blocking-write-and-flush of {len(data)} bytes "
                f"(at most {BLOCKING_WRITE_LIMIT} allowed)"
            )
        try:
            permitted = self._check_write()
            if len(data) <= permitted:
                if data:
                    self._write_permitted(data)
                self._flush()
                if self._flushed():
                    return None
                return self.blocking_flush()
        except (StreamClosed, StreamFailed) as e:
            raise stream_error(e) from None
        return self._blocking_write_rest(data)

    async def _blocking_write_rest(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            permitted = self.check_write()
            if permitted == 0:
                await self._wait_writable()
                continue
            chunk, view = view[:permitted], view[permitted:]
            self.write(bytes(chunk))
        await self.blocking_flush()

    def write_zeroes(self, n: int) -> None:
        self.write(bytes(n))

    async def blocking_write_zeroes_and_flush(self, n: int) -> None:
        await self.blocking_write_and_flush(bytes(n))

    def splice(self, src: InputStream, n: int) -> int:
        permitted = self.check_write()
        data = src.read(min(n, permitted))
        self.write(data)
        return len(data)

    async def blocking_splice(self, src: InputStream, n: int) -> int:
        while True:
            permitted = self.check_write()
            if permitted:
                break
            await self._wait_writable()
        data = await src.blocking_read(min(n, permitted))
        self.write(data)
        return len(data)

    def subscribe(self) -> Pollable:
        return Pollable(self._subscribe_ready, self._wait_writable)

    def _subscribe_ready(self) -> bool:
        try:
            return self._check_write() > 0
        except (StreamClosed, StreamFailed):
            return True


# --- simple concrete streams ---------------------------------------------------
class BytesInput(InputStream):
    """An input stream over a fixed byte string (EOF at its end)."""

    def __init__(self, data: bytes = b"") -> None:
        self._data = memoryview(data)

    def _read(self, n: int) -> bytes:
        if not self._data:
            raise StreamClosed()
        chunk, self._data = self._data[:n], self._data[n:]
        return bytes(chunk)

    def _readable(self) -> bool:
        return True

    async def _wait_readable(self) -> None:
        return None


class ReaderInput(InputStream):
    """An input stream fed by an ``asyncio.StreamReader``."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buf = b""
        self._eof = False
        self._task: asyncio.Task[bytes] | None = None

    def _take_task(self) -> None:
        t = self._task
        if t is not None and t.done():
            self._task = None
            data = t.result()
            if data:
                self._buf += data
            else:
                self._eof = True

    def _read(self, n: int) -> bytes:
        self._take_task()
        if self._buf:
            chunk, self._buf = self._buf[:n], self._buf[n:]
            return chunk
        if self._eof:
            raise StreamClosed()
        if self._task is None:
            self._task = asyncio.ensure_future(self._reader.read(DEFAULT_READ_CHUNK))
        return b""

    def _readable(self) -> bool:
        self._take_task()
        return bool(self._buf) or self._eof

    async def _wait_readable(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._reader.read(DEFAULT_READ_CHUNK))
        await asyncio.wait([self._task])
        self._take_task()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


class SinkOutput(OutputStream):
    """An output stream that hands every write to a callable (never full)."""

    def __init__(self, sink: Callable[[bytes], Any], capacity: int = 1 << 20) -> None:
        self._sink = sink
        self._capacity = capacity
        self._broken: OSError | None = None

    def retarget(self, sink: Callable[[bytes], Any]) -> None:
        """Send later writes to ``sink`` (a reused instance's next invocation).

        Handles the guest already holds on this stream follow, since they
        wrap this object rather than the sink."""
        self._sink = sink
        self._broken = None

    def _write(self, data: bytes) -> None:
        if self._broken is not None:
            raise StreamClosed()
        try:
            self._sink(data)
        except OSError as e:  # e.g. the reader of our stdout went away
            self._broken = e
            raise StreamFailed(str(e)) from None

    def _check_write(self) -> int:
        if self._broken is not None:
            raise StreamClosed()
        return self._capacity

    def _writable(self) -> bool:
        return True

    async def _wait_writable(self) -> None:
        return None


# --- registration ----------------------------------------------------------------
def interfaces(version: str) -> list[HostInterface]:
    error_iface = HostInterface(f"wasi:io/error@{version}")
    error_iface.resource("error", IoError)
    error_iface.func("[method]error.to-debug-string", lambda cx, e: e.to_debug_string())

    poll_iface = HostInterface(f"wasi:io/poll@{version}")
    poll_iface.resource("pollable", Pollable)
    poll_iface.func("[method]pollable.ready", lambda cx, p: p.ready())

    def block(cx: Any, p: Pollable) -> Awaitable[None] | None:
        return None if p._ready() else p.block()

    poll_iface.func("[method]pollable.block", block, is_async=True)
    poll_iface.func("poll", lambda cx, ps: poll_now(ps), is_async=True)

    streams = HostInterface(f"wasi:io/streams@{version}")
    streams.resource("input-stream", InputStream)
    streams.resource("output-stream", OutputStream)
    inp = "[method]input-stream."
    out = "[method]output-stream."
    streams.func(inp + "read", lambda cx, s, n: s.read(n))
    streams.func(inp + "skip", lambda cx, s, n: s.skip(n))
    streams.func(inp + "subscribe", lambda cx, s: s.subscribe())
    streams.func(out + "check-write", lambda cx, s: s.check_write())
    streams.func(out + "write", lambda cx, s, data: s.write(data))
    streams.func(out + "flush", lambda cx, s: s.flush())
    streams.func(out + "write-zeroes", lambda cx, s, n: s.write_zeroes(n))
    streams.func(out + "splice", lambda cx, s, src, n: s.splice(src, n))
    streams.func(out + "subscribe", lambda cx, s: s.subscribe())

    async def blocking_skip(cx: Any, s: InputStream, n: int) -> int:
        return await s.blocking_skip(n)

    async def blocking_write_zeroes_and_flush(cx: Any, s: OutputStream, n: int) -> None:
        await s.blocking_write_zeroes_and_flush(n)

    async def blocking_splice(cx: Any, s: OutputStream, src: InputStream, n: int) -> int:
        return await s.blocking_splice(src, n)

    # Answered at once when the stream is ready; a coroutine to park otherwise.
    streams.func(inp + "blocking-read", lambda cx, s, n: s.blocking_read_now(n), is_async=True)
    streams.func(inp + "blocking-skip", blocking_skip)
    streams.func(
        out + "blocking-write-and-flush",
        lambda cx, s, data: s.blocking_write_and_flush_now(data),
        is_async=True,
    )
    streams.func(out + "blocking-flush", lambda cx, s: s.blocking_flush_now(), is_async=True)
    streams.func(out + "blocking-write-zeroes-and-flush", blocking_write_zeroes_and_flush)
    streams.func(out + "blocking-splice", blocking_splice)
    return [error_iface, poll_iface, streams]
