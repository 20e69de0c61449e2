"""In-process sessions with a `DbPoolServer`: the same service without a socket.

A `LocalSession` behaves like one wire-protocol connection (docs/dbpool-protocol.md
§7) for a caller in the same process, one request at a time: outside a
transaction every ``query``/``execute_many`` leases a pooled connection, runs
and gives it back; ``begin`` pins a lease of one database until ``commit`` or
``rollback``; statements addressed to another database run outside the
transaction.  The server keeps owning the pools, the leases, the limits and
the statistics: requests, errors, open and abandoned transactions are counted
exactly as for socket clients (local sessions are not ``clients_connected``).

``close()`` (or ``aclose()``) ends the session: an open transaction is rolled
back and its lease returned, or discarded when an operation was interrupted
on it (its state is unknown).  The workload's typed ``fabric:dbpool/sql``
import is served by these sessions (``services/dbpool/sqlimport.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, NoReturn, Protocol

from pools import (
    ConnectionLost,
    DatabaseError,
    Lease,
    Pool,
    PoolError,
    QueryResult,
    ResultTooLarge,
)

from .client import DbPoolError
from .messages import Done, Error, Response, ServerStats
from .session import SessionHost, error_reply


class LocalHost(SessionHost, Protocol):
    """What in-process sessions need of their server (`server.DbPoolServer` is
    one): a client session's needs, the registry of local sessions, and a way
    to wait until released leases are back."""

    local_sessions: set[LocalSession]
    local_sessions_total: int

    async def settle_releases(self) -> None: ...

__all__ = ["LocalSession"]

log = logging.getLogger("services.dbpool")

_DONE = Done(0)


def _raise(reply: Error) -> DbPoolError:
    return DbPoolError(reply.code, reply.sqlstate, reply.message, reply.db_code)


class LocalSession:
    """One in-process client of a `DbPoolServer` (one request at a time)."""

    def __init__(self, server: LocalHost) -> None:
        self._server = server
        self.db: str | None = None  # the database while a transaction scope is open
        self._pool: Pool | None = None
        self._lease: Lease | None = None
        self._busy = False  # an operation is running on the pinned lease
        self.in_flight = 0
        self.requests = 0
        self.closed = False
        self._release: asyncio.Future[None] | None = None  # the last autocommit lease's
        server.local_sessions.add(self)
        server.local_sessions_total += 1

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<LocalSession {state} requests={self.requests} transaction={self.db!r}>"

    @property
    def in_transaction(self) -> bool:
        """A lease is pinned by ``begin`` (what ``transactions_open`` counts)."""
        return self._lease is not None

    # ------------------------------------------------------------------ requests

    async def query(self, db: str, sql: str, params: Sequence[Any] = ()) -> QueryResult:
        result: QueryResult = await self._request("query", db, sql, params, many=False)
        return result

    async def execute_many(self, db: str, sql: str, params_seq: Sequence[Sequence[Any]]) -> int:
        count: int = await self._request("execute_many", db, sql, params_seq, many=True)
        return count

    async def begin(self, db: str) -> None:
        self._check_open()
        self._start()
        try:
            if self.db is not None:
                msg = f"transaction open on {self.db!r}"
                self._fail("begin", Error(0, "already_in_transaction", None, msg))
            # Even a failing begin opens the scope (as on the wire): statements
            # meant for the transaction must not run outside it by accident.
            self.db = db
            pool = self._pool = self._server.pools.get(db)
            if pool is None:
                self._fail("begin", _unknown_db(db))
            try:
                lease = self._lease = await pool.acquire()
            except PoolError as exc:
                self._fail("begin", error_reply(0, exc))
            try:
                self._busy = True
                await lease.begin()
                self._busy = False
            except Exception as exc:
                self._lease = None
                self._busy = False
                discard = not isinstance(exc, DatabaseError)
                await self._server.give_back(pool, lease, discard=discard)
                self._fail("begin", error_reply(0, exc))
            self._server.count_reply("begin", _DONE)
        finally:
            self.in_flight -= 1

    async def commit(self) -> None:
        await self._finish("commit")

    async def rollback(self) -> None:
        await self._finish("rollback")

    def statistics(self) -> ServerStats:
        self._check_open()
        self._server.count_reply("stats", _DONE)
        return self._server.statistics()

    # ---------------------------------------------------------------- lifetime

    def close(self) -> None:
        """End the session; an open transaction is rolled back in the background
        (the release is tracked by the server, which waits for it on close)."""
        if self.closed:
            return
        self.closed = True
        self._server.local_sessions.discard(self)
        lease, pool = self._lease, self._pool
        self._lease = self._pool = None
        self.db = None
        if lease is not None and pool is not None:
            self._server.transactions_abandoned += 1
            _ = self._server.start_release(pool, lease, discard=self._busy)

    async def aclose(self) -> None:
        """`close`, then wait until the lease is back in its pool."""
        pending = self._lease is not None or (
            self._release is not None and not self._release.done()
        )
        self.close()
        if pending:
            await self._server.settle_releases()

    # ------------------------------------------------------------------ plumbing

    def _check_open(self) -> None:
        if self.closed:
            raise DbPoolError("disconnected", None, "the session is closed")

    def _start(self) -> None:
        self.in_flight += 1
        self.requests += 1

    def _fail(self, kind: str, reply: Error) -> NoReturn:
        self._server.count_reply(kind, reply)
        raise _raise(reply)

    async def _request(
        self, kind: str, db: str, sql: str, params: Sequence[Any], *, many: bool
    ) -> Any:
        self._check_open()
        self._start()
        try:
            if self.db is not None and self.db == db:
                return await self._in_transaction(kind, sql, params, many)
            return await self._autocommit(kind, db, sql, params, many)
        finally:
            self.in_flight -= 1

    async def _run(self, lease: Lease, sql: str, params: Sequence[Any], many: bool) -> Any:
        if many:
            return await lease.execute_many(sql, params)
        # The same limits as for socket clients: a result is read in chunks and
        # refused as soon as it crosses them, never built whole.
        limits = self._server.limits
        return await lease.query_limited(
            sql, params, max_rows=limits.max_result_rows, max_bytes=limits.max_result_size
        )

    async def _autocommit(
        self, kind: str, db: str, sql: str, params: Sequence[Any], many: bool
    ) -> Any:
        pool = self._server.pools.get(db)
        if pool is None:
            self._fail(kind, _unknown_db(db))
        previous = self._release
        if previous is not None and not previous.done():
            # at most one lease of this session is being given back at a time
            await asyncio.shield(previous)
        try:
            lease = await pool.acquire()
        except PoolError as exc:
            self._fail(kind, error_reply(0, exc))
        discard = True
        reply: Response | None = None
        try:
            result = await self._run(lease, sql, params, many)
            discard = False
            reply = _DONE
        except (DatabaseError, ResultTooLarge) as exc:
            # the statement failed or was stopped; the connection is fine unless
            # stopping it failed
            discard = not lease.usable
            reply = error_reply(0, exc)
        except Exception as exc:
            reply = error_reply(0, exc)
            if not isinstance(exc, PoolError):
                log.exception("dbpool: unexpected error running %s", kind)
        finally:
            # Runs on cancellation too; the release itself cannot be cancelled.
            # With reply_before_release the answer does not wait for the reset
            # (the server tracks the release; the next request waits for it).
            release = self._server.start_release(pool, lease, discard=discard)
            if reply is None or not self._server.limits.reply_before_release:
                await asyncio.shield(release)
            else:
                self._release = release
        if isinstance(reply, Error):
            self._fail(kind, reply)
        self._server.count_reply(kind, _DONE)
        return result

    async def _in_transaction(self, kind: str, sql: str, params: Sequence[Any], many: bool) -> Any:
        lease, pool = self._lease, self._pool
        if lease is None or pool is None:
            self._fail(kind, _aborted())
        try:
            self._busy = True
            result = await self._run(lease, sql, params, many)
            self._busy = False
        except (DatabaseError, ResultTooLarge) as exc:
            self._busy = False
            self._fail(kind, error_reply(0, exc))
        except Exception as exc:
            # The connection is gone or in an unknown state: the transaction is lost.
            self._lease = None
            self._busy = False
            await self._server.give_back(pool, lease, discard=True)
            if not isinstance(exc, ConnectionLost):
                log.exception("dbpool: unexpected error in a transaction")
            self._fail(kind, error_reply(0, exc))
        self._server.count_reply(kind, _DONE)
        return result

    async def _finish(self, kind: str) -> None:
        self._check_open()
        self._start()
        try:
            if self.db is None:
                self._fail(kind, Error(0, "no_transaction", None, "no open transaction"))
            lease, pool = self._lease, self._pool
            self.db = None
            if lease is None or pool is None:  # begin failed or the connection was lost
                self._pool = None
                if kind == "commit":
                    self._fail(kind, _aborted())
                self._server.count_reply(kind, _DONE)
                return
            discard = True
            reply: Response = _DONE
            try:
                self._busy = True
                await (lease.commit() if kind == "commit" else lease.rollback())
                discard = False
            except DatabaseError as exc:
                discard = False
                reply = error_reply(0, exc)
            except Exception as exc:
                reply = error_reply(0, exc)
            finally:
                if self._lease is not None:
                    self._lease = self._pool = None
                    await self._server.give_back(pool, lease, discard=discard)
                self._busy = False
            if isinstance(reply, Error):
                self._fail(kind, reply)
            self._server.count_reply(kind, reply)
        finally:
            self.in_flight -= 1


def _unknown_db(db: str) -> Error:
    return Error(0, "unknown_database", None, f"no database named {db!r}")


def _aborted() -> Error:
    msg = "the transaction failed to begin or lost its connection; roll back"
    return Error(0, "transaction_aborted", None, msg)
