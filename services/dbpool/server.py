"""The dbpool server: lends pooled database connections to clients over a stream.

`DbPoolServer.handle_connection(reader, writer)` serves one client; it
works with asyncio streams (``asyncio.start_server(server.handle_connection,
...)``) and with any reader/writer pair of the same shape (the virtual
network's).  The server does not own the pools: whoever created them closes
them after `DbPoolServer.close`.  Per-connection behaviour lives in
`session.Session`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

from pools import Lease, Pool

from .auth import Authenticator
from .messages import DatabaseStats, Error, Limits, Response, ServerStats, SessionStats
from .protocol import HandshakeStatus
from .session import Session, StreamReader, StreamWriter

if TYPE_CHECKING:
    from .local import LocalSession

__all__ = ["DbPoolServer"]

log = logging.getLogger("services.dbpool")


class DbPoolServer:
    def __init__(
        self,
        pools: Mapping[str, Pool],
        limits: Limits | None = None,
        auth: Authenticator | None = None,
    ) -> None:
        self.pools: Mapping[str, Pool] = dict(pools)
        self.limits = limits or Limits()
        self.auth = auth
        self.auth_failures = 0
        self.reply_bytes_peak = 0
        self._sessions: dict[Session, asyncio.Task[None] | None] = {}
        self._releases: set[asyncio.Future[None]] = set()
        self._closing = False
        self._clients_total = 0
        self._clients_rejected = 0
        self._requests: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self.transactions_abandoned = 0
        #: in-process sessions (`local.LocalSession`), counted in the statistics
        self.local_sessions: set[LocalSession] = set()
        self.local_sessions_total = 0

    def __repr__(self) -> str:
        return (
            f"<DbPoolServer databases={sorted(self.pools)} clients={self._connected()}"
            f" requests={sum(self._requests.values())} errors={sum(self._errors.values())}"
            f"{' closing' if self._closing else ''}>"
        )

    # -------------------------------------------------------------- connections

    async def handle_connection(self, reader: StreamReader, writer: StreamWriter) -> None:
        """Serve one client until it disconnects; never raises for client behaviour."""
        session = Session(self, reader, writer)
        task = self._sessions[session] = asyncio.current_task()
        try:
            await session.run(task)
        except Exception:
            log.exception("dbpool: session failed")
        finally:
            del self._sessions[session]

    def admission(self, external: bool = True) -> HandshakeStatus | None:
        """Why a new client is refused, or None to accept it.  Clients from
        outside the workload have at most ``max_external_clients`` places, so
        they can never take all of ``max_clients`` from the workload's own."""
        if self._closing:
            return HandshakeStatus.SERVER_CLOSING
        if self._connected() >= self.limits.max_clients:
            return HandshakeStatus.TOO_MANY_CLIENTS
        if external and self._connected(external=True) >= self.limits.max_external_clients:
            return HandshakeStatus.TOO_MANY_CLIENTS
        return None

    def note_accepted(self) -> None:
        self._clients_total += 1

    def _connected(self, *, external: bool = False) -> int:
        return sum(1 for s in self._sessions if s.accepted and (s.external or not external))

    async def close(self, grace: float = 5.0) -> None:
        """Refuse new clients, tell connected ones, roll back their transactions and
        wait for every lease to be back in its pool."""
        self._closing = True
        for local in list(self.local_sessions):
            local.close()
        for session in list(self._sessions):
            session.shutdown()
        tasks = [t for t in self._sessions.values() if t is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    # ------------------------------------------------------------------- leases

    async def give_back(self, pool: Pool, lease: Lease, *, discard: bool) -> None:
        """Return a lease to its pool (which rolls back an open transaction and resets
        the session; ``discard`` closes the connection instead).  Shielded: cancelling
        the caller does not stop the release."""
        await asyncio.shield(self.start_release(pool, lease, discard=discard))

    def start_release(self, pool: Pool, lease: Lease, *, discard: bool) -> asyncio.Future[None]:
        """Start returning a lease (the pool resets it in a task of its own,
        tracked here until done; close() waits for it) and return a future done
        once it is back."""
        try:
            task = pool.start_release(lease, discard=discard)
        except Exception:
            log.exception("dbpool: releasing a lease failed")
            task = asyncio.get_running_loop().create_future()
            task.set_result(None)
            return task
        if not task.done():
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)
        return task

    async def settle_releases(self) -> None:
        """Wait until every lease being given back is in its pool."""
        while self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    # --------------------------------------------------------------- statistics

    def count_reply(self, kind: str, msg: Response) -> None:
        self._requests[kind] += 1
        if isinstance(msg, Error):
            self._errors[msg.code] += 1

    def note_reply_peak(self, held: int) -> None:
        self.reply_bytes_peak = max(self.reply_bytes_peak, held)

    def count_error(self, code: str) -> None:
        self._errors[code] += 1

    def note_rejected(self, code: str) -> None:
        self._clients_rejected += 1
        self._errors[code] += 1

    def session_statistics(self) -> list[SessionStats]:
        """One entry per client connection past the handshake."""
        return [s.statistics() for s in self._sessions if s.accepted]

    def statistics(self) -> ServerStats:
        return ServerStats(
            clients_connected=self._connected(),
            clients_total=self._clients_total,
            clients_rejected=self._clients_rejected,
            clients_external=self._connected(external=True),
            auth_failures=self.auth_failures,
            reply_bytes=sum(s.replies.bytes for s in self._sessions),
            reply_bytes_peak=self.reply_bytes_peak,
            requests_in_flight=sum(s.in_flight for s in self._sessions)
            + sum(s.in_flight for s in self.local_sessions),
            transactions_open=sum(1 for s in self._sessions for t in s.txns if t.lease is not None)
            + sum(1 for s in self.local_sessions if s.in_transaction),
            transactions_abandoned=self.transactions_abandoned,
            requests=dict(self._requests),
            errors=dict(self._errors),
            databases={
                name: msgspec.convert(pool.statistics(), DatabaseStats, from_attributes=True)
                for name, pool in self.pools.items()
            },
            local_sessions=len(self.local_sessions),
            local_sessions_total=self.local_sessions_total,
        )
