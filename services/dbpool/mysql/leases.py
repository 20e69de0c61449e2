"""Transaction pooling of a MySQL front door session: a statement runs on the
session's pinned lease or a fresh one (autocommit and SET NAMES replayed first),
the lease stays pinned while the server says a transaction is open, and goes back
to the pool otherwise (or when the client leaves).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pools import ConnectionLost, DatabaseError, MySQLLease, PoolError

from .relay import Relay
from .session_base import ClientGone, Refusal, SessionBase
from .wire import SERVER_STATUS_AUTOCOMMIT, SERVER_STATUS_IN_TRANS, MalformedPacket

__all__ = ["Leases", "pool_refusal"]


class Leases(SessionBase):
    """A session's leases: borrowed per statement, pinned per transaction."""

    async def _on_lease(self, script: Callable[[Relay], Awaitable[None]], *, dirty: bool) -> None:
        """Run ``script`` on the pinned lease or a fresh one (with the session's
        settings replayed first); keep the lease pinned while the server says a
        transaction is open, give it back otherwise."""
        lease, pool = self.lease, self.pool
        assert pool is not None
        prefix: list[bytes] = []
        if lease is None:
            try:
                got = await pool.acquire()
            except PoolError as exc:
                return await self._refuse(1, pool_refusal(exc))
            assert isinstance(got, MySQLLease)
            lease = got
            if not self.autocommit:
                prefix.append(b"\x03SET autocommit=0")
            if self.names is not None:
                prefix.append(b"\x03" + self.names.statement())
        wire = Relay(self._send, prefix, known_status=self._status())

        async def exchange(reader: Any, writer: Any) -> int:
            wire.reader, wire.writer = reader, writer
            await wire.start()
            await script(wire)
            return await wire.finish()

        try:
            status = await lease.raw(exchange, dirty=dirty or bool(prefix))
        except ClientGone:
            if self.lease is not None:  # its transaction ends with the connection
                self.door.note_abandoned()
            self.lease = None
            self.door.release(pool, lease, discard=True)
            raise
        except (ConnectionLost, DatabaseError, PoolError, MalformedPacket, OSError) as exc:
            self.lease = None
            self.door.release(pool, lease, discard=True)
            if wire.forwarded:  # part of a response is out: the client cannot resync
                raise ClientGone(repr(exc)) from exc
            return await self._refuse(
                1,
                Refusal(
                    1927, "70100", f"Connection killed: the database connection was lost ({exc})"
                ),
            )
        self.autocommit = bool(status & SERVER_STATUS_AUTOCOMMIT)
        if status & SERVER_STATUS_IN_TRANS:
            self.lease = lease
        else:
            self.lease = None
            self.door.release(pool, lease, discard=False)

    def _give_back(self, *, abandoned: bool) -> None:
        lease, self.lease = self.lease, None
        if lease is not None and self.pool is not None:
            if abandoned:
                self.door.note_abandoned()
            self.door.release(self.pool, lease, discard=False)


def pool_refusal(exc: PoolError) -> Refusal:
    name = type(exc).__name__
    if name == "AcquireTimeout":
        return Refusal(1040, "08004", f"Too many connections: {exc}")
    if name == "PoolClosed":
        return Refusal(1053, "08S01", f"Server shutdown in progress: {exc}")
    return Refusal(2003, "HY000", f"Can't connect to the database: {exc}")
