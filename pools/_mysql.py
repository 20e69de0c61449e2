"""MySQL / MariaDB driver: aiomysql connections under the pool's own bookkeeping.

aiomysql has no public way to reset a session or to bound the whole connect, so this
module (and only this module) uses three of its private calls: ``Connection._connect``
(so a cancelled or timed-out connect closes its socket), ``_execute_command`` +
``_read_ok_packet`` (to send COM_RESET_CONNECTION), ``_reader`` (to notice a socket
the server already closed before handing the connection out), and ``_reader`` /
``_writer`` / ``server_status`` for `MySQLLease.raw` (a caller speaking the wire
protocol itself on a leased connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

import aiomysql
import pymysql
from pymysql.constants import CLIENT, SERVER_STATUS
from pymysql.converters import escape_bytes

from ._config import QueryResult, RowSink, StreamResult
from ._errors import ConnectionLost, DatabaseError, PoolError
from ._lease import Lease
from ._pool import Pool
from ._state import Slot

__all__ = ["MySQLLease", "MySQLPool"]

_COM_RESET_CONNECTION = 0x1F  # MySQL >= 5.7.3, MariaDB >= 10.2.4
_ER_UNKNOWN_COM_ERROR = 1047

# Error numbers after which the session is gone: client-side "server gone / lost / out of
# sync", and the server's "connection killed" (MariaDB 1927), shutdown, aborted.
# "Query execution was interrupted" (KILL QUERY), MariaDB's variant with a statement timeout
_INTERRUPTED_ERRNOS = frozenset({1317, 1969, 3024})

_LOST_ERRNOS = frozenset({2003, 2006, 2013, 2014, 2055, 1053, 1152, 1927, 4031})


class _Fixes:
    """What both cursors change in aiomysql's: no extra SHOW WARNINGS round trip
    after each statement (aiomysql turns server warnings into Python warnings),
    and bytes parameters escaped here."""

    async def _show_warnings(self, conn: Any) -> None:
        return None

    def _escape_args(self, args: Any, conn: Any) -> Any:
        # aiomysql 0.3 escapes bytes with a helper PyMySQL >= 1.1.1 no longer has
        # ("'str' object is not callable"); escape them as _binary X'..' here.
        if isinstance(args, tuple | list):
            return tuple(_escape(conn, arg) for arg in args)
        return super()._escape_args(args, conn)  # type: ignore[misc]


class _Cursor(_Fixes, aiomysql.Cursor):  # type: ignore[misc]
    """aiomysql's cursor with `_Fixes`."""


def _escape(conn: Any, value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return escape_bytes(bytes(value))
    return conn.escape(value)


class _SSCursor(_Fixes, aiomysql.SSCursor):  # type: ignore[misc]
    """aiomysql's unbuffered cursor (rows are read from the socket as they are
    fetched) with `_Fixes`."""


def _bind(cursor: Any, sql: str, params: Sequence[Any]) -> str:
    """``sql`` with ``params`` escaped into it (bad parameters: a client error)."""
    if not params:
        return sql
    try:
        return str(cursor.mogrify(sql, tuple(params)))
    except (TypeError, ValueError, KeyError) as exc:
        raise _client_error(exc) from exc


def _client_error(exc: Exception) -> DatabaseError:
    return DatabaseError(f"invalid parameters: {exc}", code="client")


class MySQLLease(Lease):
    kind: ClassVar[str] = "mysql"

    def __init__(self, owner: MySQLPool, slot: Slot[Any]) -> None:
        super().__init__(owner, slot)
        self._conn: Any = slot.conn

    @property
    def session_id(self) -> int:
        return int(self._conn.server_thread_id[0])

    async def _query(self, sql: str, params: Sequence[Any]) -> QueryResult:
        cursor = _Cursor(self._conn)
        await cursor.execute(_bind(cursor, sql, params))
        description = cursor.description
        rows = list(await cursor.fetchall())
        rowcount = cursor.rowcount
        await cursor.close()  # drains any further result sets
        return QueryResult(
            columns=[d[0] for d in description] if description else [],
            rows=[tuple(row) for row in rows],
            rowcount=rowcount if rowcount is not None and rowcount >= 0 else len(rows),
        )

    async def _stream(
        self,
        sql: str,
        params: Sequence[Any],
        sink: RowSink,
        chunk_rows: int,
        max_rows: int | None,
    ) -> StreamResult:
        # An unbuffered read is one round trip already; max_rows is the sink's.
        del max_rows
        cursor = _SSCursor(self._conn)
        await cursor.execute(_bind(cursor, sql, params))
        description = cursor.description
        if not description:
            rowcount = cursor.rowcount
            await cursor.close()
            return StreamResult([], rowcount if rowcount is not None and rowcount >= 0 else 0)
        columns = [d[0] for d in description]
        total = 0
        want = chunk_rows
        try:
            while rows := await cursor.fetchmany(want):
                total += len(rows)
                want = await sink(columns, [tuple(row) for row in rows]) or want
        except Exception:
            await self._stop_unbuffered(cursor)
            raise
        await cursor.close()  # reads the end of the result and any further result sets
        return StreamResult(columns, total)

    async def _stop_unbuffered(self, cursor: Any) -> None:
        """Stop a statement whose rows are still arriving: KILL QUERY from a second
        connection, then read what is left (up to the server's error). The lease
        stays usable (in a transaction, MySQL rolls back only the statement); if
        that fails, the lease is marked broken and its connection discarded."""
        conn = self._conn
        if conn.closed:
            return
        try:
            async with asyncio.timeout(self._owner_config().connect_timeout):
                await self._owner_kill(self.session_id)
                try:
                    await cursor.close()
                except pymysql.err.OperationalError as exc:
                    if not exc.args or exc.args[0] not in _INTERRUPTED_ERRNOS:
                        raise
        except Exception as exc:
            self._broken = f"a stopped statement left the connection in an unknown state: {exc!r}"

    def _owner_config(self) -> Any:
        return self._owner._config  # type: ignore[attr-defined]

    async def _owner_kill(self, thread_id: int) -> None:
        await self._owner._kill_query(thread_id)  # type: ignore[attr-defined]

    async def _execute_many(self, sql: str, params_seq: Sequence[Sequence[Any]]) -> int:
        cursor = _Cursor(self._conn)
        args = [tuple(params) for params in params_seq]
        try:
            for params in args:  # fail on bad parameters before anything is sent
                cursor.mogrify(sql, params)
        except (TypeError, ValueError, KeyError) as exc:
            raise _client_error(exc) from exc

        async def run() -> int:
            # INSERT ... VALUES becomes one multi-row INSERT; others run once per set.
            count = await cursor.executemany(sql, args)
            await cursor.close()
            return int(count or 0)

        return await self._all_or_nothing(run)

    async def raw(
        self, exchange: Callable[[Any, Any], Awaitable[int]], *, dirty: bool = False
    ) -> int:
        """Hand the connection's own streams to ``exchange(reader, writer)``, which
        speaks the MySQL protocol itself (the dbpool MySQL front door forwards
        packets without decoding them) and returns the status flags the server
        reported last. Errors map as for any operation (a lost socket:
        `ConnectionLost`; anything unknown leaves the lease broken, so its
        connection is discarded). ``dirty``: the exchange changed session state,
        so the pool resets the connection when the lease comes back."""
        transacted = self._transacted

        async def run() -> int:
            conn = self._conn
            if conn._reader is None or conn._writer is None:
                raise ConnectionLost("MySQL connection lost: the socket is closed")
            status = int(await exchange(conn._reader, conn._writer))
            conn.server_status = status
            return status

        status = await self._run(run)
        self._transacted = transacted or dirty or self._driver_in_transaction()
        return status

    async def _begin(self) -> None:
        await self._conn.begin()

    async def _commit(self) -> None:
        await self._conn.commit()

    async def _rollback(self) -> None:
        await self._conn.rollback()

    def _driver_in_transaction(self) -> bool:
        return bool((self._conn.server_status or 0) & SERVER_STATUS.SERVER_STATUS_IN_TRANS)

    def _connection_closed(self) -> bool:
        return _socket_closed(self._conn)

    def _map_error(self, exc: Exception) -> PoolError | None:
        return map_mysql_error(exc, self._conn)


def _socket_closed(conn: Any) -> bool:
    if conn.closed:
        return True
    reader = getattr(conn, "_reader", None)
    return reader is None or reader.at_eof() or bool(getattr(reader, "eof_received", False))


def map_mysql_error(exc: Exception, conn: Any) -> PoolError | None:
    if isinstance(exc, pymysql.err.Error):
        args = exc.args
        errno = args[0] if args and isinstance(args[0], int) else 0
        message = str(args[1]) if len(args) > 1 else str(exc)
        if (
            errno in _LOST_ERRNOS
            or errno == 0
            or conn.closed
            or isinstance(exc, pymysql.err.InterfaceError)
        ):
            return ConnectionLost(f"MySQL connection lost: ({errno}) {message}")
        return DatabaseError(message, code=str(errno), sqlstate=getattr(exc, "sqlstate", None))
    if isinstance(exc, (OSError, asyncio.IncompleteReadError)) or conn.closed:
        return ConnectionLost(f"MySQL connection lost: {exc!r}")
    return None


class MySQLPool(Pool):
    """A pool of aiomysql connections (MySQL or MariaDB), autocommit on."""

    kind: ClassVar[str] = "mysql"
    _driver_name: ClassVar[str] = "MySQL"

    _reset_supported = True

    async def _connect(self) -> Any:
        cfg = self._config
        conn = aiomysql.Connection(
            host=cfg.host,
            port=cfg.resolved_port,
            user=cfg.user,
            password=cfg.password or "",
            db=cfg.database,
            autocommit=True,
            # UPDATE reports rows matched, not rows changed: the same count as PostgreSQL.
            client_flag=CLIENT.FOUND_ROWS,
            connect_timeout=cfg.connect_timeout,
            program_name=cfg.application_name or "",
        )
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                await conn._connect()
        except BaseException:
            conn.close()
            raise
        return conn

    async def _ping(self, conn: Any) -> None:
        await conn.ping(reconnect=False)

    async def _kill_query(self, thread_id: int) -> None:
        """Stop the statement running on session ``thread_id`` (a short extra connection)."""
        conn = await self._connect()
        try:
            cursor = _Cursor(conn)
            await cursor.execute(f"KILL QUERY {int(thread_id)}")
            await cursor.close()
        finally:
            conn.close()

    async def _reset(self, conn: Any) -> None:
        if self._reset_supported:
            try:
                # Rolls back, drops temporary tables, user variables and prepared
                # statements, resets session variables; keeps the connection and charset.
                await conn._execute_command(_COM_RESET_CONNECTION, b"")
                await conn._read_ok_packet()
            except pymysql.err.Error as exc:
                if exc.args and exc.args[0] == _ER_UNKNOWN_COM_ERROR and not conn.closed:
                    self._reset_supported = False
                else:
                    raise
        if not self._reset_supported and conn.get_transaction_status():
            await conn.rollback()
        if not conn.get_autocommit():
            await conn.autocommit(True)

    async def _close_connection(self, conn: Any) -> None:
        try:
            await conn.ensure_closed()
        finally:
            conn.close()

    def _terminate_connection(self, conn: Any) -> None:
        conn.close()

    def _is_closed(self, conn: Any) -> bool:
        return _socket_closed(conn)

    def _make_lease(self, slot: Slot[Any]) -> MySQLLease:
        return MySQLLease(self, slot)
