"""One client connection of the dbpool server: handshake, dispatch, transactions.

Theory of operation
-------------------
The read loop feeds bytes into a `ServerConnection` and dispatches each
request as it arrives, after taking one of ``max_in_flight`` slots (when
none is free the loop stops reading: backpressure).  A slot is given back
once the request's response is written.

* Outside a transaction a ``query``/``execute_many`` runs in its own task:
  acquire a lease, run, release, respond.  Such requests may run
  concurrently and complete in any order.
* ``begin`` creates a `_Txn` with its own queue and worker task; the worker
  acquires and pins one lease and runs, strictly in arrival order, every
  later request addressed to the same database until ``commit`` or
  ``rollback``.  The dispatcher's view of "in a transaction" changes when
  the request is *read*, so pipelined clients get the order they wrote.
* On EOF, a reset, an idle timeout, a protocol error or server shutdown the
  session tears down: running tasks are cancelled; a pinned lease that was
  idle is rolled back and released, a lease interrupted in the middle of an
  operation is discarded (its state is unknown).  Releases are shielded
  from cancellation, so the pool never loses or reuses a dirty connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from pools import ConnectionLost, DatabaseError, Lease, Pool, PoolError, ResultTooLarge

from .auth import METHOD, Authenticator
from .messages import Limits, ServerStats, SessionStats
from .protocol import (
    NEED_DATA,
    Auth,
    Begin,
    Challenge,
    ClientHello,
    Commit,
    ConnectionClosed,
    Done,
    Error,
    ExecuteMany,
    FrameTooLarge,
    HandshakeStatus,
    Ping,
    Pong,
    Query,
    RemoteProtocolError,
    Request,
    Response,
    Rollback,
    Rows,
    ServerConnection,
    State,
    Stats,
    StatsReply,
)
from .results import FIRST_CHUNK_ROWS, Reply, ReplyBuffer, RowsBuilder, UnencodableResult

__all__ = ["Session", "SessionHost", "StreamReader", "StreamWriter", "error_reply"]

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
        code = _POOL_ERROR_CODES.get(type(exc).__name__, "pool_error")
        return Error(rid, code, None, str(exc) or type(exc).__name__)
    return Error(rid, "internal_error", None, f"{type(exc).__name__}: {exc}")


_POOL_ERROR_CODES = {
    "ResultTooLarge": "result_too_large",
    "UnencodableResult": "unencodable_result",
    "AcquireTimeout": "acquire_timeout",
    "PoolClosed": "pool_closed",
    "ConnectionLost": "connection_lost",
}


class _Txn:
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

class Session:
    def __init__(self, server: SessionHost, reader: StreamReader, writer: StreamWriter) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self._limits = server.limits
        self._conn = ServerConnection(server.limits)
        self._slots = asyncio.Semaphore(server.limits.max_in_flight)
        self._parallel = asyncio.Semaphore(server.limits.max_parallel)
        self._write_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._txn: _Txn | None = None  # the transaction new requests are routed to
        self.txns: set[_Txn] = set()  # transactions whose worker is still alive
        self.in_flight = 0
        self.replies = ReplyBuffer(server.note_reply_peak)
        self._lost = False  # writing to the client failed
        self.accepted = False
        self.requests = 0
        self._last_activity = time.monotonic()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._read_task: asyncio.Task[Any] | None = None
        self._idled_out = False
        self._write_timer: asyncio.TimerHandle | None = None
        self._drain_task: asyncio.Task[Any] | None = None
        self._drain_since = 0.0
        self._write_stalled = False
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

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        try:
            if await self._handshake():
                await self._serve()
        except (ConnectionError, OSError):
            pass  # the client went away; teardown handles the rest
        finally:
            await self._teardown()

    async def _handshake(self) -> bool:
        conn = self._conn
        try:
            async with asyncio.timeout(self._limits.handshake_timeout):
                while True:
                    ev = conn.next_event()
                    if isinstance(ev, ClientHello):
                        break
                    if isinstance(ev, ConnectionClosed):
                        return False
                    conn.receive_data(await self._reader.read(READ_SIZE))
        except TimeoutError:
            self._server.count_error("handshake_timeout")
            return False
        except RemoteProtocolError as exc:
            self._server.count_error(exc.code)
            return False
        refusal = self._server.admission(self.external)
        if refusal is not None:
            self._server.note_rejected(refusal.name.lower())
            await self._write(conn.reject(refusal))
            return False
        auth = self._server.auth
        need_auth = auth is not None and auth.required(self._peer_external)
        reply = conn.accept(auth_required=need_auth)
        if conn.state is State.CLOSED:
            await self._write(reply)
            self._server.note_rejected("unsupported_version")
            return False
        self.accepted = True  # counts against max_clients from here on
        if auth is not None and need_auth:
            nonce = auth.nonce()
            await self._write(reply + conn.send(Challenge(0, METHOD, nonce)))
            if not await self._authenticate(nonce):
                return False
        else:
            await self._write(reply)
        self._server.note_accepted()
        return True

    async def _authenticate(self, nonce: bytes) -> bool:
        """Read the client's `Auth` (within the handshake timeout) and check it.
        Anything else, or a wrong proof, closes the connection: no request of an
        unauthenticated client reaches a pool."""
        auth = self._server.auth
        assert auth is not None
        conn = self._conn
        try:
            async with asyncio.timeout(self._limits.handshake_timeout):
                while True:
                    ev = conn.next_event()
                    if ev is NEED_DATA:
                        conn.receive_data(await self._reader.read(READ_SIZE))
                        continue
                    break
        except TimeoutError:
            self._server.count_error("handshake_timeout")
            return False
        except RemoteProtocolError as exc:
            self._server.count_error(exc.code)
            return False
        if isinstance(ev, ConnectionClosed):
            return False
        if not isinstance(ev, Auth):
            self._server.auth_failures += 1
            await self._close_with("auth_required", "authenticate before any request")
            return False
        if not auth.verify(nonce, ev.method, ev.proof):
            self._server.auth_failures += 1
            log.warning("dbpool: authentication failed for %s", self._peer)
            await self._close_with("auth_failed", "authentication failed")
            return False
        conn.authenticated()
        self.requests += 1
        done = Done(ev.id)
        self._server.count_reply("auth", done)
        await self._write(conn.send(done))
        return True

    async def _serve(self) -> None:
        conn = self._conn
        while True:
            try:
                ev = conn.next_event()
            except RemoteProtocolError as exc:
                await self._close_with(exc.code, exc.message)
                return
            if ev is NEED_DATA:
                data = await self._read()
                if data is None:
                    await self._close_with(
                        "idle_timeout", f"no request for {self._limits.idle_timeout} s"
                    )
                    return
                conn.receive_data(data)
                continue
            if isinstance(ev, ConnectionClosed):
                return
            assert not isinstance(ev, ClientHello)
            await self._slots.acquire()
            if self._lost:  # a reply could not be written: the client is gone
                self._slots.release()
                return
            self.in_flight += 1
            self.requests += 1
            await self._dispatch(ev)

    async def _read(self) -> bytes | None:
        """Bytes from the client (b"" at EOF), or None once it has idled out.

        One idle timer per idle period, not one per read: the timer checks the
        time of the last activity when it fires and re-arms itself while the
        client is active or has requests in flight."""
        if self._idle_timer is None:
            delay = self._last_activity + self._limits.idle_timeout - time.monotonic()
            self._idle_timer = asyncio.get_running_loop().call_later(
                max(delay, 0.0), self._idle_check
            )
        task = self._read_task = asyncio.current_task()
        try:
            data = await self._reader.read(READ_SIZE)
        except asyncio.CancelledError:
            if self._idled_out and task is not None and task.uncancel() == 0:
                return None
            raise
        finally:
            self._read_task = None
        self._last_activity = time.monotonic()
        return data

    def _idle_check(self) -> None:
        self._idle_timer = None
        task = self._read_task
        if task is None:
            return  # not waiting for the client: the next read arms the timer
        now = time.monotonic()
        if self.in_flight:
            self._last_activity = now
        remaining = self._last_activity + self._limits.idle_timeout - now
        if remaining > 0:
            self._idle_timer = asyncio.get_running_loop().call_later(remaining, self._idle_check)
            return
        self._idled_out = True
        task.cancel()

    # --------------------------------------------------------------- dispatching

    async def _dispatch(self, req: Request) -> None:
        txn = self._txn
        match req:
            case Query(db=db) | ExecuteMany(db=db) if txn is not None and txn.db == db:
                txn.queue.put_nowait(req)
            case Query() | ExecuteMany():
                _ = self._spawn(self._run_autocommit(req))
            case Begin(id=rid, db=db):
                if txn is not None:
                    msg = f"transaction open on {txn.db!r}"
                    await self._respond(req, Error(rid, "already_in_transaction", None, msg))
                else:
                    # Even a Begin that fails opens the transaction scope: requests
                    # pipelined behind it must not run outside it.  Only Commit or
                    # Rollback end the scope.
                    txn = self._txn = _Txn(db, self._server.pools.get(db))
                    self.txns.add(txn)
                    txn.task = self._spawn(self._run_transaction(txn, req))
            case Commit(id=rid) | Rollback(id=rid):
                if txn is None:
                    msg = "no open transaction"
                    await self._respond(req, Error(rid, "no_transaction", None, msg))
                else:
                    txn.queue.put_nowait(req)
                    self._txn = None
            case Ping(id=rid):
                await self._respond(req, Pong(rid))
            case Stats(id=rid):
                await self._respond(req, StatsReply(rid, self._server.statistics()))
            case Auth(id=rid):  # already authenticated, or not required
                await self._respond(req, Done(rid))

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("dbpool request task failed", exc_info=task.exception())

    def _unknown_db(self, rid: int, db: str) -> Error:
        return Error(rid, "unknown_database", None, f"no database named {db!r}")

    # ----------------------------------------------------------------- execution

    async def _execute(self, lease: Lease, req: Query | ExecuteMany) -> Response | Reply:
        if isinstance(req, Query):
            return await self._query(lease, req)
        count = await lease.execute_many(req.sql, req.params_seq)
        return Done(req.id, count)

    async def _query(self, lease: Lease, req: Query) -> Reply:
        """Stream the result from the driver, encoding each chunk as it arrives;
        `ResultTooLarge` stops the statement as soon as a limit is crossed."""
        lim = self._limits
        builder = RowsBuilder(req.id, max_rows=lim.max_result_rows, max_bytes=lim.max_result_size)
        reply = Reply()

        async def sink(columns: list[str], rows: list[tuple[Any, ...]]) -> int:
            added = builder.add(rows)
            want = builder.next_chunk()
            await self.replies.grow(reply, added, builder.size, want * builder.row_size)
            return want

        try:
            res = await lease.stream(
                req.sql, req.params, sink, chunk_rows=FIRST_CHUNK_ROWS, max_rows=lim.max_result_rows
            )
        except BaseException:
            self.replies.release(reply)
            raise
        reply.message = builder.message(res.columns, res.rowcount)
        return reply

    async def _run_autocommit(self, req: Query | ExecuteMany) -> None:
        pool = self._server.pools.get(req.db)
        if pool is None:
            await self._respond(req, self._unknown_db(req.id, req.db))
            return
        async with self._parallel:
            await self._run_statement(pool, req)

    async def _run_statement(self, pool: Pool, req: Query | ExecuteMany) -> None:
        try:
            lease = await pool.acquire()
        except PoolError as exc:
            await self._respond(req, error_reply(req.id, exc))
            return
        discard = True
        resp: Response | Reply | None = None
        try:
            try:
                resp = await self._execute(lease, req)
                discard = False
            except (DatabaseError, ResultTooLarge, UnencodableResult) as exc:
                # the statement failed or was stopped; the connection is fine
                # unless stopping it failed
                discard = not lease.usable
                resp = error_reply(req.id, exc)
            except Exception as exc:
                resp = error_reply(req.id, exc)
                if not isinstance(exc, PoolError):
                    log.exception("dbpool: unexpected error running %s", REQUEST_KINDS[type(req)])
        finally:
            # Runs on cancellation too; the release itself cannot be cancelled.
            # The reset after the statement is a database round trip of its
            # own: with reply_before_release the response does not wait for it.
            release = self._server.start_release(pool, lease, discard=discard)
            if resp is None or not self._server.limits.reply_before_release:
                await asyncio.shield(release)
        # The request keeps its in-flight slot until the lease is back, so one
        # client never holds more than max_in_flight leases, releasing or not.
        try:
            await self._respond(req, resp, free_slot=False)
        finally:
            try:
                if not release.done():
                    await asyncio.shield(release)
            finally:
                self._free_slot()

    async def _run_transaction(self, txn: _Txn, begin: Begin) -> None:
        try:
            await self._open_transaction(txn, begin)
            while True:
                req = await txn.queue.get()
                if isinstance(req, Commit | Rollback):
                    await self._finish_transaction(txn, req)
                    return
                assert isinstance(req, Query | ExecuteMany)
                await self._in_transaction(txn, req)
        finally:
            self.txns.discard(txn)
            if txn.lease is not None and txn.pool is not None:  # the client went away
                lease, txn.lease = txn.lease, None
                self._server.transactions_abandoned += 1
                await self._server.give_back(txn.pool, lease, discard=txn.busy)

    async def _open_transaction(self, txn: _Txn, begin: Begin) -> None:
        pool = txn.pool
        if pool is None:
            await self._respond(begin, self._unknown_db(begin.id, begin.db))
            return
        try:
            lease = txn.lease = await pool.acquire()
        except PoolError as exc:
            await self._respond(begin, error_reply(begin.id, exc))
            return
        try:
            txn.busy = True
            await lease.begin()
            txn.busy = False
        except Exception as exc:
            txn.lease = None
            discard = not isinstance(exc, DatabaseError)
            await self._server.give_back(pool, lease, discard=discard)
            await self._respond(begin, error_reply(begin.id, exc))
            return
        await self._respond(begin, Done(begin.id))

    async def _in_transaction(self, txn: _Txn, req: Query | ExecuteMany) -> None:
        lease = txn.lease
        if lease is None or txn.pool is None:
            await self._respond(req, _aborted(req.id))
            return
        try:
            txn.busy = True
            resp = await self._execute(lease, req)
            txn.busy = False
        except (DatabaseError, ResultTooLarge, UnencodableResult) as exc:
            txn.busy = False
            resp = error_reply(req.id, exc)
            if not lease.usable:  # stopping the statement failed: the transaction is lost
                txn.lease = None
                await self._server.give_back(txn.pool, lease, discard=True)
        except Exception as exc:
            # The connection is gone or in an unknown state: the transaction is lost.
            txn.lease = None
            txn.busy = False
            await self._server.give_back(txn.pool, lease, discard=True)
            resp = error_reply(req.id, exc)
            if not isinstance(exc, ConnectionLost):
                log.exception("dbpool: unexpected error in a transaction")
        await self._respond(req, resp)

    async def _finish_transaction(self, txn: _Txn, req: Commit | Rollback) -> None:
        lease = txn.lease
        if lease is None or txn.pool is None:
            resp: Response = Done(req.id) if isinstance(req, Rollback) else _aborted(req.id)
            await self._respond(req, resp)
            return
        discard = True
        try:
            txn.busy = True
            await (lease.commit() if isinstance(req, Commit) else lease.rollback())
            discard = False
            resp = Done(req.id)
        except DatabaseError as exc:
            discard = False
            resp = error_reply(req.id, exc)
        except Exception as exc:
            resp = error_reply(req.id, exc)
        finally:
            if txn.lease is not None:
                txn.lease = None
                await self._server.give_back(txn.pool, lease, discard=discard)
            txn.busy = False
        await self._respond(req, resp)

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
        self._slots.release()

    async def _write(self, data: bytes | bytearray) -> None:
        await self._write_out([data])

    async def _write_out(self, out: list[bytes | bytearray]) -> None:
        """Write ``out``'s one item (taken out of the list) and wait for the drain."""
        async with self._write_lock:
            data = out.pop()
            if not data:
                return
            self._writer.write(data)
            del data
            # One write timer armed at a time, not a timeout scope per write:
            # most drains return at once.
            self._drain_since = time.monotonic()
            if self._write_timer is None:
                self._write_timer = asyncio.get_running_loop().call_later(
                    self._limits.write_timeout, self._write_check
                )
            task = self._drain_task = asyncio.current_task()
            try:
                try:
                    await self._writer.drain()
                except asyncio.CancelledError:
                    if self._write_stalled and task is not None and task.uncancel() == 0:
                        raise TimeoutError from None
                    raise
                finally:
                    self._drain_task = None
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

    def _write_check(self) -> None:
        self._write_timer = None
        task = self._drain_task
        if task is None:
            return  # no write waiting: the next one arms the timer
        remaining = self._drain_since + self._limits.write_timeout - time.monotonic()
        if remaining > 0:
            self._write_timer = asyncio.get_running_loop().call_later(remaining, self._write_check)
            return
        self._write_stalled = True
        task.cancel()

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

    def shutdown(self) -> None:
        """Server shutdown: tell the client and close; the read loop then ends."""
        if self._conn.state is State.OPEN:
            self._server.count_error("server_closing")
            self._writer.write(self._conn.close("server_closing", "the service is shutting down"))
        self._writer.close()

    async def _teardown(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        if self._conn.state is not State.CLOSED:
            self._conn.close("closed", "")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            self._writer.close()
            async with asyncio.timeout(5.0):
                await self._writer.wait_closed()
        except (ConnectionError, OSError, TimeoutError):
            pass


def _aborted(rid: int) -> Error:
    msg = "the transaction failed to begin or lost its connection; send rollback"
    return Error(rid, "transaction_aborted", None, msg)
