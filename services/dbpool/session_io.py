"""The base of one client session of the dbpool server: the streams it is given
(`StreamReader`, `StreamWriter`), what it needs of its server (`SessionHost`),
exceptions mapped to wire errors (`error_reply`), a pinned transaction's state
(`Txn`), and `SessionIO`: the session's state and its output (one response per
request, written under a lock, each within the write timeout). running.py,
transactions.py and session.py build on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from pools import DatabaseError, Lease, Pool, PoolError

from .auth import Authenticator
from .messages import Limits, ServerStats, SessionStats
from .protocol import (
    Auth,
    Begin,
    Commit,
    Error,
    ExecuteMany,
    FrameTooLarge,
    HandshakeStatus,
    Ping,
    Query,
    Request,
    Response,
    Rollback,
    Rows,
    ServerConnection,
    State,
    Stats,
)
from .results import Reply, ReplyBuffer
from .slots import Slots, WaitTimer

__all__ = [
    "REQUEST_KINDS",
    "SessionHost",
    "SessionIO",
    "StreamReader",
    "StreamWriter",
    "Txn",
    "error_reply",
]

log = logging.getLogger("services.dbpool")

READ_SIZE = 65536


class StreamReader(Protocol):
    """What the server needs of a reader (asyncio.StreamReader or the virtual network's)."""

    def read(self, n: int = -1, /) -> Awaitable[bytes]: ...


class StreamWriter(Protocol):
    def write(self, data: bytes | bytearray, /) -> None: ...

    def drain(self) -> Awaitable[None]: ...

    def close(self) -> None: ...

    def wait_closed(self) -> Awaitable[None]: ...

    def get_extra_info(self, name: str, default: Any = None, /) -> Any: ...


REQUEST_KINDS: dict[type, str] = {
    Auth: "auth",
    Query: "query",
    ExecuteMany: "execute_many",
    Begin: "begin",
    Commit: "commit",
    Rollback: "rollback",
    Ping: "ping",
    Stats: "stats",
}


def error_reply(rid: int, exc: BaseException) -> Error:
    """The one place that maps exceptions to wire error codes."""
    if isinstance(exc, DatabaseError):
        return Error(rid, "database_error", exc.sqlstate, exc.message, exc.code)
    if isinstance(exc, PoolError):
        code = POOL_ERROR_CODES.get(type(exc).__name__, "pool_error")
        return Error(rid, code, None, str(exc) or type(exc).__name__)
    return Error(rid, "internal_error", None, f"{type(exc).__name__}: {exc}")


POOL_ERROR_CODES = {
    "ResultTooLarge": "result_too_large",
    "UnencodableResult": "unencodable_result",
    "AcquireTimeout": "acquire_timeout",
    "PoolClosed": "pool_closed",
    "ConnectionLost": "connection_lost",
}


class Txn:
    """A transaction pinned to this session; owned by its worker task."""

    __slots__ = ("busy", "db", "lease", "pool", "queue", "task")

    def __init__(self, db: str, pool: Pool | None) -> None:
        self.db = db
        self.pool = pool
        self.queue: asyncio.Queue[Request] = asyncio.Queue()
        self.lease: Lease | None = None
        self.busy = False  # an operation is running on the lease
        self.task: asyncio.Task[None] | None = None


class SessionHost(Protocol):
    """What a client session needs of its server (`server.DbPoolServer` is one):
    the pools and limits, admission, the shared counters, and lease release."""

    pools: Mapping[str, Pool]
    limits: Limits
    auth: Authenticator | None
    auth_failures: int
    transactions_abandoned: int

    def admission(self, external: bool = True) -> HandshakeStatus | None: ...
    def note_accepted(self) -> None: ...
    def note_rejected(self, code: str) -> None: ...
    def note_reply_peak(self, held: int) -> None: ...
    def count_reply(self, kind: str, msg: Response) -> None: ...
    def count_error(self, code: str) -> None: ...
    async def give_back(self, pool: Pool, lease: Lease, *, discard: bool) -> None: ...
    def start_release(self, pool: Pool, lease: Lease, *, discard: bool) -> asyncio.Future[None]: ...
    def statistics(self) -> ServerStats: ...


class SessionIO:
    """One client session's state and its output (see session.py)."""

    def __init__(self, server: SessionHost, reader: StreamReader, writer: StreamWriter) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self._limits = server.limits
        self._conn = ServerConnection(server.limits)
        self._slots = Slots(server.limits.max_in_flight)
        self._parallel = Slots(server.limits.max_parallel)
        self._write_lock = Slots(1)  # one response written (and drained) at a time
        self._tasks: set[asyncio.Task[None]] = set()
        self._txn: Txn | None = None  # the transaction new requests are routed to
        self.txns: set[Txn] = set()  # transactions whose worker is still alive
        self.in_flight = 0
        self.replies = ReplyBuffer(server.note_reply_peak)
        self._lost = False  # writing to the client failed
        self.accepted = False
        self.requests = 0
        self._last_activity = time.monotonic()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None  # the session's own (its read loop)
        self._read_task: asyncio.Task[Any] | None = None
        self._idled_out = False
        self._drains = WaitTimer(server.limits.write_timeout)
        self._peer = writer.get_extra_info("peername")
        # False only for a peer on the workload's own virtual network (not ingress)
        self._peer_external = writer.get_extra_info("peer_external")
        self.external = self._peer_external is not False

    def statistics(self) -> SessionStats:
        return SessionStats(
            peer=str(self._peer),
            external=self.external,
            requests_read=self.requests,
            requests_in_flight=self.in_flight,
            bytes_buffered_in=self._conn.bytes_buffered,
            reply_bytes=self.replies.bytes,
            reply_bytes_peak=self.replies.peak,
        )

    def __repr__(self) -> str:
        return (
            f"<Session peer={self._peer!r} {self._conn.state.name} requests={self.requests}"
            f" in_flight={self.in_flight} transaction={self._txn.db if self._txn else None!r}>"
        )

    def _unknown_db(self, rid: int, db: str) -> Error:
        return Error(rid, "unknown_database", None, f"no database named {db!r}")

    # ------------------------------------------------------------------- output

    async def _respond(
        self, req: Request, msg: Response | Reply, *, free_slot: bool = True
    ) -> None:
        """Write the one response of ``req`` and give its slot back (unless
        ``free_slot`` is False: the caller then calls `_free_slot`)."""
        encoded = msg if isinstance(msg, Reply) else None
        try:
            if self._conn.state is not State.OPEN:
                return  # closing: the response has nowhere to go
            data: bytes | bytearray
            try:
                if encoded is not None:
                    assert encoded.message is not None
                    data = self._conn.send_encoded(encoded.message)
                    encoded.message = None
                    self.replies.hold(encoded, len(data) - encoded.held)
                    msg = Rows(req.id, [], [], 0)  # what the counters see
                else:
                    assert not isinstance(msg, Reply)
                    data = self._conn.send(msg)
            except FrameTooLarge as exc:
                msg = Error(req.id, "result_too_large", None, exc.message)
                data = self._conn.send(msg)
            except Exception as exc:  # a value msgspec cannot encode
                msg = Error(req.id, "unencodable_result", None, f"{type(exc).__name__}: {exc}")
                data = self._conn.send(msg)
            assert not isinstance(msg, Reply)
            self._server.count_reply(REQUEST_KINDS[type(req)], msg)
            # Hand the bytes over without keeping a reference here: a failed drain's
            # traceback would otherwise keep the whole reply alive until the cyclic GC.
            out = [data]
            del data
            await self._write_out(out)
        except (ConnectionError, OSError):
            self._lost = True  # stop dispatching; the read loop sees the disconnect
        finally:
            if encoded is not None:
                self.replies.release(encoded)  # written and drained, or never to be
            self._last_activity = time.monotonic()
            if free_slot:
                self._free_slot()

    def _free_slot(self) -> None:
        self.in_flight -= 1
        self._slots.give()

    async def _write(self, data: bytes | bytearray) -> None:
        await self._write_out([data])

    async def _write_out(self, out: list[bytes | bytearray]) -> None:
        """Write ``out``'s one item (taken out of the list) and wait for the drain."""
        lock = self._write_lock
        if not lock.take_now():
            await lock.take()
        try:
            data = out.pop()
            if not data:
                return
            self._writer.write(data)
            del data
            try:
                # One write timer per session, not a timeout scope per write.
                await self._drains.bound(self._writer.drain())
            except TimeoutError:
                # The client stopped reading its replies: give up on it, so the
                # leases its waiting requests hold go back to their pools.
                if not self._lost:
                    self._lost = True
                    self._server.count_error("write_timeout")
                    log.info(
                        "dbpool: %s read no reply for %s s; closing",
                        self._peer,
                        self._limits.write_timeout,
                    )
                self._abort()
                raise ConnectionResetError("write_timeout") from None
        finally:
            lock.give()

    def _abort(self) -> None:
        transport = getattr(self._writer, "transport", None)
        abort = getattr(transport, "abort", None) or getattr(self._writer, "abort", None)
        if abort is not None:
            abort()
        else:
            self._writer.close()

    async def _close_with(self, code: str, message: str) -> None:
        self._server.count_error(code)
        try:
            await self._write(self._conn.close(code, message))
        except (ConnectionError, OSError):
            pass
