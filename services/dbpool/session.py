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
* ``begin`` creates a `Txn` with its own queue and worker task; the worker
  acquires and pins one lease and runs, strictly in arrival order, every
  later request addressed to the same database until ``commit`` or
  ``rollback``.  The dispatcher's view of "in a transaction" changes when
  the request is *read*, so pipelined clients get the order they wrote.
* On EOF, a reset, an idle timeout, a protocol error or server shutdown the
  session tears down: running tasks are cancelled; a pinned lease that was
  idle is rolled back and released, a lease interrupted in the middle of an
  operation is discarded (its state is unknown).  Releases are shielded
  from cancellation, so the pool never loses or reuses a dirty connection.

Its parts: session_io.py (the session's state and its output), running.py
(statements on a lease of their own), transactions.py (transactions pinned to a
lease); this module holds the handshake, the read loop and the dispatch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .auth import METHOD
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
    Ping,
    Pong,
    Query,
    RemoteProtocolError,
    Request,
    Rollback,
    State,
    Stats,
    StatsReply,
)
from .session_io import READ_SIZE, SessionHost, StreamReader, StreamWriter, Txn, error_reply
from .slots import within
from .transactions import Transactions

__all__ = ["Session", "SessionHost", "StreamReader", "StreamWriter", "error_reply"]

log = logging.getLogger("services.dbpool")


class Session(Transactions):
    """One client connection of the dbpool server (see the module docstring)."""

    # ------------------------------------------------------------------ main loop

    async def run(self, task: asyncio.Task[Any] | None = None) -> None:
        """Serve the client; ``task`` is the running task, when the caller knows it."""
        # the read loop's task: the handshake, the reads and the teardown run in it
        self._task = task if task is not None else asyncio.current_task()
        try:
            if await self._handshake():
                await self._serve()
        except (ConnectionError, OSError):
            pass  # the client went away; teardown handles the rest
        finally:
            await self._teardown()

    async def _handshake(self) -> bool:
        conn = self._conn
        deadline = time.monotonic() + self._limits.handshake_timeout
        try:
            while True:
                ev = conn.next_event()
                if isinstance(ev, ClientHello):
                    break
                if isinstance(ev, ConnectionClosed):
                    return False
                # each read gets what is left of the one time limit (usually
                # the hello arrives in the first)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                conn.receive_data(await within(self._reader.read(READ_SIZE), left, self._task))
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
            if not self._slots.take_now():
                await self._slots.take()
            if self._lost:  # a reply could not be written: the client is gone
                self._slots.give()
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
        task = self._read_task = self._task
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
                    txn = self._txn = Txn(db, self._server.pools.get(db))
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
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("dbpool request task failed", exc_info=task.exception())

    # ------------------------------------------------------------------ closing

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
        self._drains.cancel()
        if self._conn.state is not State.CLOSED:
            self._conn.close("closed", "")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            self._writer.close()
            await within(self._writer.wait_closed(), 5.0, self._task)
        except (ConnectionError, OSError, TimeoutError):
            pass
