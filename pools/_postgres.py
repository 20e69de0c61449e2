"""PostgreSQL driver: asyncpg connections under the pool's own bookkeeping.

Private asyncpg calls are used, all kept to this module: ``Connection._execute``
(what ``fetch``/``execute`` use underneath; it returns rows *and* the command status in
one round trip, with asyncpg's retry on a stale cached statement),
``Connection._prepare(use_cache=True)`` (column names of a result with no rows, from
the statement cache, without a round trip), and the cursor's ``_bind_exec`` / ``_exec``
/ ``_close_portal`` (bind a portal and fetch its first chunk in one round trip, fetch
the next chunks, close a portal stopped early), as asyncpg's cursor iterator uses them.
The one-round-trip bounded read outside a transaction and its byte guard live in
``_pg_read.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

import asyncpg
from asyncpg.cursor import Cursor

from ._config import QueryResult, RowSink, StreamResult, tag_count
from ._errors import ConnectionLost, DatabaseError, PoolError, ResultTooLarge
from ._lease import Lease
from ._pg_read import ONE_TRIP_BYTES, GuardedConnection, install_guard, read_once
from ._pool import Pool
from ._state import Slot

__all__ = ["PostgresLease", "PostgresPool"]

# Everything DISCARD ALL does except DEALLOCATE ALL / DISCARD PLANS, which would throw
# away asyncpg's statement cache. Sent as one simple-protocol round trip.
_RESET_EXTRA = "SET SESSION AUTHORIZATION DEFAULT;\nDISCARD TEMP;\nDISCARD SEQUENCES;\n"

# SQLSTATEs that mean the session is gone: class 08 (connection exception) and the
# 57P0x operator interventions (admin shutdown / pg_terminate_backend, crash, starting up).
_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


class PostgresLease(Lease):
    kind: ClassVar[str] = "postgres"

    def __init__(self, owner: PostgresPool, slot: Slot[GuardedConnection]) -> None:
        super().__init__(owner, slot)
        self._conn: GuardedConnection = slot.conn

    @property
    def session_id(self) -> int:
        return self._conn.get_server_pid()

    async def _query(self, sql: str, params: Sequence[Any]) -> QueryResult:
        conn = self._conn
        rows, status, _ = await conn._execute(  # type: ignore[attr-defined]
            sql, tuple(params), 0, None, return_status=True
        )
        if rows:
            columns = list(rows[0].keys())
        else:
            stmt = await conn._prepare(sql, use_cache=True)  # type: ignore[attr-defined]
            columns = [attr.name for attr in stmt.get_attributes()]
        return QueryResult(
            columns=columns,
            rows=[tuple(row) for row in rows],
            rowcount=tag_count(status, len(rows)),
        )

    async def _stream(
        self,
        sql: str,
        params: Sequence[Any],
        sink: RowSink,
        chunk_rows: int,
        max_rows: int | None,
    ) -> StreamResult:
        conn = self._conn
        if max_rows is not None and not conn.is_in_transaction():
            # One round trip, no transaction of its own (pools/_pg_read.py).
            once = await read_once(conn, sql, params, max_rows + 1, ONE_TRIP_BYTES)
            if once is not None:
                return await self._hand_over(sql, once, sink, chunk_rows, max_rows)
            # cancelled for its size before it ended: read it through a cursor
        stmt = await conn._prepare(sql, use_cache=True)  # type: ignore[attr-defined]
        columns = [attr.name for attr in stmt.get_attributes()]
        if not columns:  # no result set (DML, DDL): nothing to bound
            _, status, _ = await conn._execute(  # type: ignore[attr-defined]
                sql, tuple(params), 0, None, return_status=True
            )
            return StreamResult([], tag_count(status, 0))
        # A cursor (a named portal) needs a transaction: the lease's, or one of its own.
        own_transaction = not conn.is_in_transaction()
        if own_transaction:
            await conn.execute("BEGIN")
        # Bind and the first fetch go in one round trip (asyncpg's cursor iterator
        # does the same); later chunks are one Execute each.
        state = stmt._state
        cursor: Any = Cursor(conn, sql, state, tuple(params), state.record_class)
        try:
            records = await cursor._bind_exec(chunk_rows, None)
            total = 0
            want = chunk_rows
            while records:
                total += len(records)
                want = await sink(columns, [tuple(r) for r in records]) or want
                if cursor._exhausted:
                    break
                records = await cursor._exec(want, None)
        except Exception:
            # Stop the statement: the rest of the result is never produced.
            if not conn.is_closed():
                try:
                    if own_transaction:
                        await conn.execute("ROLLBACK")
                    elif cursor._portal_name:
                        await cursor._close_portal(None)
                except Exception:  # the original error is the one to report
                    pass
            raise
        if own_transaction:
            await conn.execute("COMMIT")
        elif cursor._portal_name:
            await cursor._close_portal(None)
        return StreamResult(columns, total)

    async def _hand_over(
        self,
        sql: str,
        once: tuple[list[Any], str | None, bool],
        sink: RowSink,
        chunk_rows: int,
        max_rows: int,
    ) -> StreamResult:
        """Give a result read in one round trip to the sink, in its chunk sizes."""
        records, status, completed = once
        if records:
            columns = list(records[0].keys())
        else:
            stmt = await self._conn._prepare(sql, use_cache=True)  # type: ignore[attr-defined]
            columns = [attr.name for attr in stmt.get_attributes()]
            if not columns:  # no result set (DML, DDL)
                return StreamResult([], tag_count(status, 0))
        total = len(records)
        start = 0
        want = chunk_rows
        while start < total:
            chunk = [tuple(r) for r in records[start : start + want]]
            start += len(chunk)
            want = await sink(columns, chunk) or want
        if not completed or total > max_rows:
            raise ResultTooLarge(f"the result has more than {max_rows} rows", rows=total)
        return StreamResult(columns, tag_count(status, total))

    async def _execute_many(self, sql: str, params_seq: Sequence[Sequence[Any]]) -> int:
        # One round trip per parameter set, so the affected-row count is exact; asyncpg's
        # executemany pipelines but reports no counts.
        conn = self._conn

        async def run() -> int:
            total = 0
            for params in params_seq:
                _, status, _ = await conn._execute(  # type: ignore[attr-defined]
                    sql, tuple(params), 0, None, return_status=True
                )
                total += tag_count(status, 0)
            return total

        return await self._all_or_nothing(run)

    async def _begin(self) -> None:
        await self._conn.execute("BEGIN")

    async def _commit(self) -> None:
        await self._conn.execute("COMMIT")

    async def _rollback(self) -> None:
        await self._conn.execute("ROLLBACK")

    def _driver_in_transaction(self) -> bool:
        return self._conn.is_in_transaction()

    def _connection_closed(self) -> bool:
        return self._conn.is_closed()

    def _map_error(self, exc: Exception) -> PoolError | None:
        return map_postgres_error(exc, self._conn)


def map_postgres_error(exc: Exception, conn: asyncpg.Connection) -> PoolError | None:
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = exc.sqlstate or ""
        if sqlstate.startswith("08") or sqlstate in _LOST_SQLSTATES or conn.is_closed():
            return ConnectionLost(f"PostgreSQL connection lost: [{sqlstate}] {exc}")
        return DatabaseError(str(exc), code=sqlstate, sqlstate=sqlstate or None)
    if isinstance(exc, (OSError, asyncio.IncompleteReadError)) or conn.is_closed():
        return ConnectionLost(f"PostgreSQL connection lost: {exc!r}")
    if isinstance(exc, asyncpg.InterfaceError):
        # Raised by asyncpg before anything reaches the server: wrong argument count or
        # type for a placeholder. The connection is fine.
        return DatabaseError(str(exc), code="client")
    return None


class PostgresPool(Pool):
    """A pool of asyncpg connections."""

    kind: ClassVar[str] = "postgres"
    _driver_name: ClassVar[str] = "PostgreSQL"

    _reset_sql: str | None = None

    async def _connect(self) -> asyncpg.Connection:
        cfg = self._config
        settings = {"application_name": cfg.application_name} if cfg.application_name else None
        conn: GuardedConnection = await asyncpg.connect(
            host=cfg.host,
            port=cfg.resolved_port,
            user=cfg.user,
            password=cfg.password,
            database=cfg.database,
            timeout=cfg.connect_timeout,
            server_settings=settings,
            connection_class=GuardedConnection,
        )
        install_guard(conn)
        return conn

    async def _ping(self, conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT 1")

    async def _reset(self, conn: asyncpg.Connection) -> None:
        if self._reset_sql is None:
            # asyncpg's own reset query (advisory locks, cursors, LISTEN, RESET ALL),
            # adapted to the server's capabilities, plus temp tables and sequences.
            self._reset_sql = _RESET_EXTRA + conn.get_reset_query()
        sql = self._reset_sql
        if conn.is_in_transaction():
            sql = "ROLLBACK;\n" + sql
        await conn.execute(sql)

    async def _close_connection(self, conn: asyncpg.Connection) -> None:
        await conn.close(timeout=self._config.connect_timeout)

    def _terminate_connection(self, conn: asyncpg.Connection) -> None:
        conn.terminate()

    def _is_closed(self, conn: asyncpg.Connection) -> bool:
        return conn.is_closed()

    def _make_lease(self, slot: Slot[Any]) -> PostgresLease:
        return PostgresLease(self, slot)
