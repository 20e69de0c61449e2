"""asyncio client for the dbpool service (native Python, msgspec).

One `DbPoolClient` multiplexes concurrent requests over one connection
(up to the server's announced ``max_in_flight``).  A transaction belongs to
the connection, not to a task: while one is open, every request to its
database from any task sharing the client runs inside it.  Give each task
that needs a transaction its own client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import Any, Protocol

import msgspec

from fabric.errors import FabricError

from .auth import METHOD, proof
from .protocol import (
    NEED_DATA,
    Auth,
    Begin,
    Challenge,
    ClientConnection,
    Commit,
    ConnectionClosed,
    Done,
    Error,
    ExecuteMany,
    FrameTooLarge,
    Ping,
    Pong,
    ProtocolError,
    Query,
    Request,
    Response,
    Rollback,
    Rows,
    ServerHello,
    ServerStats,
    Stats,
    StatsReply,
)
from .session import StreamReader, StreamWriter

__all__ = ["DbPoolClient", "DbPoolError", "Result", "connect"]


class OpenConnection(Protocol):
    """``asyncio.open_connection`` or ``VirtualNetwork.open_connection``: called
    with ``host`` and ``port`` by keyword."""

    def __call__(self, *, host: str, port: int) -> Awaitable[tuple[StreamReader, StreamWriter]]: ...


class DbPoolError(FabricError):
    """An error answered by the service or a failure talking to it (same shape as
    the guest SDK's): ``code``, ``sqlstate`` (database errors only), ``message``,
    ``db_code`` (the database's own code, for database errors)."""

    def __init__(
        self, code: str, sqlstate: str | None, message: str, db_code: str | None = None
    ) -> None:
        super().__init__(f"{code}{f' [{sqlstate}]' if sqlstate else ''}: {message}")
        self.code = code
        self.sqlstate = sqlstate
        self.message = message
        self.db_code = db_code


class Result(msgspec.Struct, frozen=True):
    columns: list[str]
    rows: list[tuple[Any, ...]]
    rowcount: int

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


async def _open(*, host: str, port: int) -> tuple[StreamReader, StreamWriter]:
    return await asyncio.open_connection(host=host, port=port)


async def connect(
    port: int,
    host: str = "127.0.0.1",
    *,
    timeout: float | None = 60.0,
    open_connection: OpenConnection | None = None,
    secret: str | bytes | None = None,
) -> DbPoolClient:
    """Connect and handshake.  ``timeout`` bounds the connect and each request.
    ``secret`` answers the service's challenge when it asks for one."""
    opener = open_connection or _open
    writer: StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await opener(host=host, port=port)
            conn = ClientConnection()
            writer.write(conn.hello())
            await writer.drain()
            hello: ServerHello | None = None
            while True:
                ev = conn.next_event()
                if isinstance(ev, ServerHello):
                    if not ev.auth_required:
                        return DbPoolClient(reader, writer, conn, ev, timeout)
                    if secret is None:
                        msg = "the service requires a secret (connect(..., secret=...))"
                        raise DbPoolError("auth_required", None, msg)
                    hello = ev
                    continue
                if isinstance(ev, Challenge) and hello is not None and secret is not None:
                    key = (secret.encode() if isinstance(secret, str) else secret).strip()
                    writer.write(conn.send(Auth(1, METHOD, proof(key, ev.nonce))))
                    await writer.drain()
                    continue
                if isinstance(ev, Done) and hello is not None:
                    conn.authenticated()
                    return DbPoolClient(reader, writer, conn, hello, timeout)
                if isinstance(ev, Error):
                    raise DbPoolError(ev.code, ev.sqlstate, ev.message, ev.db_code)
                if isinstance(ev, ConnectionClosed):
                    raise DbPoolError("disconnected", None, "closed during the handshake")
                if ev is not NEED_DATA:
                    raise DbPoolError("protocol_error", None, f"unexpected {ev!r} in handshake")
                conn.receive_data(await reader.read(65536))
    except BaseException as exc:
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        if isinstance(exc, TimeoutError):
            raise DbPoolError("timeout", None, f"connect to {host}:{port} timed out") from None
        if isinstance(exc, ProtocolError):
            raise DbPoolError(exc.code, None, exc.message) from None
        if isinstance(exc, OSError):
            msg = f"connect to {host}:{port}: {exc}"
            raise DbPoolError("disconnected", None, msg) from None
        raise


class DbPoolClient:
    def __init__(
        self,
        reader: StreamReader,
        writer: StreamWriter,
        conn: ClientConnection,
        server: ServerHello,
        timeout: float | None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._conn = conn
        self.server = server
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._slots = asyncio.Semaphore(server.max_in_flight)
        self._write_lock = asyncio.Lock()
        self._closed: DbPoolError | None = None
        self.in_transaction: str | None = None
        self._reader_task = asyncio.ensure_future(self._read_loop())

    def __repr__(self) -> str:
        state = f"closed ({self._closed.code})" if self._closed else "open"
        return f"<DbPoolClient {state} pending={len(self._pending)}>"

    @property
    def closed(self) -> bool:
        return self._closed is not None

    # ----------------------------------------------------------------- requests

    async def execute(self, db: str, sql: str, params: Sequence[Any] = ()) -> Result:
        resp = await self._call(Query(self._id(), db, sql, tuple(params)))
        assert isinstance(resp, Rows)
        return Result(resp.columns, resp.rows, resp.rowcount)

    async def executemany(self, db: str, sql: str, params_seq: Iterable[Sequence[Any]]) -> int:
        seq = tuple(tuple(p) for p in params_seq)
        resp = await self._call(ExecuteMany(self._id(), db, sql, seq))
        assert isinstance(resp, Done)
        return resp.rowcount

    async def begin(self, db: str) -> None:
        try:
            await self._call(Begin(self._id(), db))
        except DbPoolError as exc:
            if exc.code != "already_in_transaction" and not self.closed:
                # A failed Begin still opens the scope on the server; close it.
                with contextlib.suppress(DbPoolError):
                    await self._call(Rollback(self._id()))
            raise
        self.in_transaction = db

    async def commit(self) -> None:
        try:
            await self._call(Commit(self._id()))
        finally:
            self.in_transaction = None

    async def rollback(self) -> None:
        try:
            await self._call(Rollback(self._id()))
        finally:
            self.in_transaction = None

    @contextlib.asynccontextmanager
    async def transaction(self, db: str) -> AsyncIterator[DbPoolClient]:
        """Begin; commit on success, roll back (and re-raise) on exception."""
        await self.begin(db)
        try:
            yield self
        except BaseException:
            with contextlib.suppress(DbPoolError):
                await self.rollback()
            raise
        await self.commit()

    async def ping(self) -> float:
        start = time.monotonic()
        resp = await self._call(Ping(self._id()))
        assert isinstance(resp, Pong)
        return time.monotonic() - start

    async def stats(self) -> ServerStats:
        resp = await self._call(Stats(self._id()))
        assert isinstance(resp, StatsReply)
        return resp.stats

    async def close(self) -> None:
        if self._closed is None:
            self._closed = DbPoolError("disconnected", None, "client closed")
        self._reader_task.cancel()
        with contextlib.suppress(BaseException):
            await self._reader_task
        self._fail_pending(self._closed)
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            async with asyncio.timeout(5.0):
                await self._writer.wait_closed()

    async def __aenter__(self) -> DbPoolClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- plumbing

    def _id(self) -> int:
        return next(self._ids)

    async def _call(self, req: Request) -> Response:
        if (closed := self._closed) is not None:
            raise DbPoolError(closed.code, closed.sqlstate, closed.message)
        try:
            frame = self._conn.send(req)
        except FrameTooLarge as exc:
            raise DbPoolError(exc.code, None, exc.message) from None
        async with self._slots:
            fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            self._pending[req.id] = fut
            try:
                async with self._write_lock:
                    self._writer.write(frame)
                    await self._writer.drain()
                async with asyncio.timeout(self.timeout):
                    resp = await fut
            except TimeoutError:
                raise DbPoolError("timeout", None, f"no response within {self.timeout} s") from None
            except (ConnectionError, OSError) as exc:
                raise DbPoolError("disconnected", None, str(exc)) from None
            finally:
                self._pending.pop(req.id, None)
        if isinstance(resp, Error):
            raise DbPoolError(resp.code, resp.sqlstate, resp.message, resp.db_code)
        return resp

    def _fail_pending(self, exc: DbPoolError) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()

    async def _read_loop(self) -> None:
        conn = self._conn
        try:
            while True:
                ev = conn.next_event()
                if ev is NEED_DATA:
                    conn.receive_data(await self._reader.read(65536))
                    continue
                if isinstance(ev, ConnectionClosed):
                    raise DbPoolError("disconnected", None, "the service closed the connection")
                if isinstance(ev, Error) and ev.id == 0:
                    raise DbPoolError(ev.code, ev.sqlstate, ev.message)
                if isinstance(ev, ServerHello):
                    continue
                fut = self._pending.get(ev.id)
                if fut is not None and not fut.done():
                    fut.set_result(ev)
        except DbPoolError as exc:
            self._closed = exc
        except ProtocolError as exc:
            self._closed = DbPoolError(exc.code, None, exc.message)
        except (ConnectionError, OSError) as exc:
            self._closed = DbPoolError("disconnected", None, str(exc))
        finally:
            if self._closed is None:
                self._closed = DbPoolError("disconnected", None, "client closed")
            self._fail_pending(self._closed)
