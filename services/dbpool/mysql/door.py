"""The MySQL front door: MySQL clients borrow the dbpool service's MySQL pools.

`MySQLFrontDoor.handle_connection(reader, writer)` serves one client (an
asyncio or virtual-network stream pair); per-client behaviour lives in
`session.MySQLSession`. The front door shares the pools (and so their
limits and statistics) with the dbpool protocol; it does not own them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

import msgspec

from pools import MySQLLease, Pool

from .config import MySQLConfig, MySQLUser
from .session import MySQLSession, Refusal

__all__ = ["MySQLDoorStats", "MySQLFrontDoor", "check_config"]

log = logging.getLogger("services.dbpool.mysql")


class MySQLDoorStats(msgspec.Struct, frozen=True, kw_only=True):
    """What `MySQLFrontDoor.statistics()` returns (the ``mysql`` entry of the
    dbpool statistics)."""

    port: int
    clients_connected: int
    clients_external: int
    clients_total: int
    clients_rejected: int
    auth_failures: int
    #: clients holding a server connection for an open transaction
    transactions_open: int
    #: transactions rolled back because their client went away
    transactions_abandoned: int
    prepared_statements: int
    #: bytes read from / written to clients
    bytes_received: int = 0
    bytes_sent: int = 0
    #: commands received, by name ("query", "stmt_execute", ...)
    commands: dict[str, int]
    #: ERR packets sent by the front door itself, by error number
    errors: dict[str, int]


class MySQLFrontDoor:
    def __init__(self, config: MySQLConfig, pools: Mapping[str, Pool]) -> None:
        self.config = config
        self.pools: dict[str, Pool] = {
            name: pool for name, pool in pools.items() if pool.config.kind == "mysql"
        }
        check_config(config, {name: pool.config.kind for name, pool in pools.items()})
        self.port = config.port
        self._ids = itertools.count(1)
        self._sessions: dict[MySQLSession, asyncio.Task[Any] | None] = {}
        self._releases: set[asyncio.Task[None]] = set()
        self._closing = False
        self._clients_total = 0
        self._bytes_received = 0
        self._bytes_sent = 0
        self._clients_rejected = 0
        self._auth_failures = 0
        self._abandoned = 0
        self._commands: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()

    def __repr__(self) -> str:
        return (
            f"<MySQLFrontDoor port={self.port} databases={sorted(self.pools)}"
            f" clients={self._connected()} commands={sum(self._commands.values())}"
            f"{' closing' if self._closing else ''}>"
        )

    # ---------------------------------------------------------------- connections

    async def handle_connection(self, reader: Any, writer: Any) -> None:
        """Serve one client until it leaves; never raises for client behaviour."""
        session = MySQLSession(self, reader, writer)
        self._sessions[session] = asyncio.current_task()
        try:
            await session.run()
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # close() ended a session waiting for its client: not an error
        except Exception:
            log.exception("mysql front door: session failed")
        finally:
            del self._sessions[session]
            self._bytes_received += session.bytes_received
            self._bytes_sent += session.bytes_sent
            if session.accepted:
                self._clients_total += 1

    def next_connection_id(self) -> int:
        return next(self._ids) & 0xFFFFFFFF

    def admission(self, external: bool) -> Refusal | None:
        refusal = None
        if self._closing:
            refusal = Refusal(1053, "08S01", "Server shutdown in progress")
        elif self._connected() >= self.config.max_clients or (
            external and self._connected(external=True) >= self.config.max_external_clients
        ):
            refusal = Refusal(1040, "08004", "Too many connections")
        if refusal is not None:
            self._clients_rejected += 1
        return refusal

    def allowed_databases(self, user: MySQLUser) -> list[str]:
        names = sorted(self.pools) if user.databases is None else user.databases
        return [n for n in names if n in self.pools]

    def _connected(self, *, external: bool = False) -> int:
        return sum(1 for s in self._sessions if s.accepted and (s.external or not external))

    async def close(self, grace: float = 5.0) -> None:
        """Refuse new clients, end connected ones (rolling back their
        transactions) and wait until every lease is back in its pool."""
        self._closing = True
        for session, task in self._sessions.items():
            session.shutdown()
            if session.reading and task is not None:
                task.cancel()
        tasks = [t for t in self._sessions.values() if t is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        while self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    # --------------------------------------------------------------------- leases

    def release(self, pool: Pool, lease: MySQLLease, *, discard: bool) -> None:
        """Give a lease back in a task of its own (the pool rolls back and resets
        as needed); close() waits for it."""
        task = asyncio.ensure_future(self._release(pool, lease, discard))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, pool: Pool, lease: MySQLLease, discard: bool) -> None:
        try:
            await pool.release(lease, discard=discard)
        except Exception:
            log.exception("mysql front door: releasing a lease failed")

    async def settle(self) -> None:
        """Wait until every lease being given back is in its pool."""
        while self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    # ----------------------------------------------------------------- statistics

    def count(self, command: str) -> None:
        self._commands[command] += 1

    def count_error(self, errno: int) -> None:
        self._errors[str(errno)] += 1

    def note_auth_failure(self) -> None:
        self._auth_failures += 1

    def note_abandoned(self) -> None:
        self._abandoned += 1

    def statistics(self) -> MySQLDoorStats:
        accepted = [s for s in self._sessions if s.accepted]
        return MySQLDoorStats(
            port=self.port,
            clients_connected=len(accepted),
            clients_external=sum(1 for s in accepted if s.external),
            clients_total=self._clients_total + len(accepted),
            clients_rejected=self._clients_rejected,
            auth_failures=self._auth_failures,
            transactions_open=sum(1 for s in accepted if s.in_transaction),
            transactions_abandoned=self._abandoned,
            prepared_statements=sum(len(s.statements) for s in accepted),
            bytes_received=self._bytes_received + sum(s.bytes_received for s in self._sessions),
            bytes_sent=self._bytes_sent + sum(s.bytes_sent for s in self._sessions),
            commands=dict(self._commands),
            errors=dict(self._errors),
        )


def check_config(config: MySQLConfig, kinds: Mapping[str, str]) -> None:
    """Raise ValueError naming every problem of ``config`` given the dbpool
    databases (name -> kind)."""
    problems = []
    if "mysql" not in kinds.values():
        problems.append("the front door needs at least one database of kind 'mysql'")
    if not config.users:
        problems.append("users: at least one user is needed")
    for name, user in config.users.items():
        for db in [*(user.databases or ()), *([user.database] if user.database else [])]:
            if kinds.get(db) != "mysql":
                why = "is not of kind 'mysql'" if db in kinds else "is not in databases"
                problems.append(f"users.{name}: database {db!r} {why}")
    if problems:
        raise ValueError("mysql: " + "; ".join(problems))
