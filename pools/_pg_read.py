"""A PostgreSQL statement outside a transaction, read in one round trip but bounded.

A cursor needs a transaction, so a bounded read through one costs BEGIN and
COMMIT round trips when the lease has none open. `read_once` instead binds
the unnamed portal and executes it with a row limit (the protocol's
``Execute`` max_rows; the portal is closed at the Sync that follows), as
``asyncpg.Connection._execute`` does with ``limit``: one round trip, and at
most ``limit`` rows come back.

Rows are decoded by asyncpg as they arrive, so the bytes are bounded at the
socket: a `ReadGuard` sits between asyncpg's transport and its protocol and
counts what a bounded read receives. Past ``budget`` bytes it stops reading
from the socket (the server blocks once the socket buffers are full) and
sends a CancelRequest through asyncpg, then reads on. Either the statement
was cancelled before it ended, so its implicit transaction rolled back and
nothing of it stays (`read_once` returns None and the caller reads it again
through a cursor), or it had already finished and its whole result, at most
``budget`` plus what the socket buffers held, is returned. A cancel that
arrives when the backend is idle is ignored by PostgreSQL, so it cannot hit a
later statement.

Private asyncpg API, kept here: ``Connection._transport`` (the guard is
installed once per connection), ``Connection._execute(..., limit,
return_status=True)`` and ``Connection._cancel_current_command``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg

__all__ = ["ONE_TRIP_BYTES", "GuardedConnection", "ReadGuard", "install_guard", "read_once"]

#: bytes a one-round-trip read may receive before the statement is cancelled
#: and read through a cursor instead
ONE_TRIP_BYTES = 256 * 1024


class ReadGuard(asyncio.Protocol):
    """Forwards a connection's events to asyncpg's protocol, counting the bytes
    received while a bounded read is armed."""

    __slots__ = ("_budget", "_conn", "_inner", "_transport", "armed", "cancel", "tripped")

    def __init__(self, conn: asyncpg.Connection, inner: Any, transport: Any) -> None:
        self._conn = conn
        self._inner = inner
        self._transport = transport
        self._budget = 0
        self.armed = False
        self.tripped = False
        self.cancel: asyncio.Future[None] | None = None

    def arm(self, budget: int) -> None:
        self._budget = budget
        self.tripped = False
        self.cancel = None
        self.armed = True

    def data_received(self, data: bytes) -> None:
        if self.armed:
            self._budget -= len(data)
            if self._budget < 0 and not self.tripped:
                self._trip()
        self._inner.data_received(data)

    def _trip(self) -> None:
        self.tripped = True
        self._transport.pause_reading()
        self.cancel = asyncio.ensure_future(self._send_cancel())

    async def _send_cancel(self) -> None:
        conn = self._conn
        sent = asyncio.get_running_loop().create_future()
        try:
            # asyncpg's own CancelRequest (a short second connection); on failure
            # it terminates the connection, so the read fails as a lost connection
            conn._cancel_current_command(sent)  # type: ignore[attr-defined]
            await sent
        finally:
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedConnection(asyncpg.Connection):
    """An asyncpg connection with a `ReadGuard` (see `install_guard`)."""

    __slots__ = ("read_guard",)
    read_guard: ReadGuard


def install_guard(conn: GuardedConnection) -> None:
    transport = conn._transport  # type: ignore[attr-defined]
    guard = ReadGuard(conn, transport.get_protocol(), transport)
    transport.set_protocol(guard)
    conn.read_guard = guard


async def read_once(
    conn: GuardedConnection, sql: str, args: Sequence[Any], limit: int, budget: int
) -> tuple[list[Any], str | None, bool] | None:
    """Run ``sql`` outside a transaction in one round trip: (rows, command tag,
    completed), at most ``limit`` rows (``completed`` is False when there were
    more). None when the result passed ``budget`` bytes and the statement was
    cancelled before it ended (rolled back: run it again through a cursor)."""
    guard = conn.read_guard
    guard.arm(budget)
    try:
        result = await conn._execute(  # type: ignore[attr-defined]
            sql, tuple(args), limit, None, return_status=True
        )
    except asyncpg.QueryCanceledError:
        if guard.tripped:
            return None
        raise
    finally:
        guard.armed = False
        if guard.cancel is not None and not guard.cancel.done():
            await asyncio.shield(guard.cancel)
    rows, status, completed = result
    return rows, status, completed
