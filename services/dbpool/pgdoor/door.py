"""The PostgreSQL front door: unmodified PostgreSQL clients (psql, pgbench, asyncpg,
psycopg...) use the dbpool service's databases through transaction pooling.

`PgFrontDoor.handle_connection(reader, writer)` serves one client: startup (TLS
and GSS encryption refused with 'N'), authentication (SCRAM-SHA-256 or trust,
per configured user), then the relay loop: client messages go to a server
session leased from the database's `pools.PgWirePool` for the length of a
transaction (or one statement outside a transaction), the server's replies come
back unchanged except where `relay.Relay` must step in. A CancelRequest carrying
a client's key is forwarded to the server session that client holds.

LISTEN/UNLISTEN are answered here and registered with the database's
`notify.DatabaseListener`, whose dedicated server connection listens on the
union of the clients' channels; its notifications are written to each listening
client between the client's messages (held while a reply to the client is being
relayed), within ``max_notification_bytes`` unread per client.

Its parts: client.py (one client's reads and state), login.py (the startup
handshake and cancel requests), delivery.py (LISTEN/NOTIFY delivery); this module
holds the front door and its relay loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

import msgspec

from pools import (
    AcquireTimeout,
    ConnectFailed,
    DatabaseConfig,
    PgConnection,
    PgWirePool,
    PoolError,
)

from ..messages import DatabaseStats, Limits, PostgresFrontDoorStats
from .admin import AdminConsole
from .client import READ_SIZE, BufferedReader, Client, ClientGone, ServerLost
from .config import ADMIN_DATABASES, PostgresFrontDoorConfig, load_password
from .delivery import NotificationDelivery
from .login import Login
from .notify import DatabaseListener
from .relay import ProtocolViolation
from .scram import ScramVerifier
from .wire import BadStartup

__all__ = ["PgFrontDoor"]

log = logging.getLogger("services.dbpool.pgdoor")


class PgFrontDoor(Login, NotificationDelivery):
    """Transaction pooling for PostgreSQL clients over the service's databases."""

    def __init__(
        self,
        config: PostgresFrontDoorConfig,
        databases: Mapping[str, DatabaseConfig],
        limits: Limits | None = None,
    ) -> None:
        self.config = config
        self.limits = limits or Limits()
        self.database_configs = {n: c for n, c in databases.items() if c.kind == "postgres"}
        self.pools: dict[str, PgWirePool] = {}
        self._verifiers: dict[str, ScramVerifier] = {}
        self._clients: dict[int, Client] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.port = config.port
        self.clients_total = 0
        self.clients_rejected = 0
        self.auth_failures = 0
        self.cancel_requests = 0
        self.leases = 0
        self.transactions_abandoned = 0
        self.errors: Counter[str] = Counter()
        self.bytes_received = 0
        self.bytes_sent = 0
        self.listeners: dict[str, DatabaseListener] = {}
        self.notifications_delivered = 0
        self.notification_overflows = 0
        self.admin = AdminConsole(self)

    def __repr__(self) -> str:
        return (
            f"<PgFrontDoor port={self.port} databases={sorted(self.database_configs)} "
            f"clients={len(self._clients)} leases={self.leases}>"
        )

    async def start(self) -> None:
        for name, user in self.config.users.items():
            if user.auth == "scram-sha-256":
                self._verifiers[name] = ScramVerifier.from_password(load_password(name, user))
        self.pools = {name: PgWirePool(cfg) for name, cfg in self.database_configs.items()}
        results = await asyncio.gather(
            *(p.start() for p in self.pools.values()), return_exceptions=True
        )
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await self.close()
            raise failure

    async def close(self, grace: float = 5.0) -> None:
        self._closing = True
        listeners = list(self.listeners.values())
        await asyncio.gather(*(lst.stop() for lst in listeners), return_exceptions=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        pools, self.pools = self.pools, {}
        await asyncio.gather(*(p.close() for p in pools.values()), return_exceptions=True)

    # ---------------------------------------------------------------- clients

    async def handle_connection(self, reader: Any, writer: Any) -> None:
        """Serve one client until it leaves; never raises for client behaviour."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        inp = BufferedReader(reader)
        client: Client | None = None
        try:
            try:
                async with asyncio.timeout(self.limits.handshake_timeout):
                    client = await self._handshake(inp, writer)
            except TimeoutError:
                self._refuse(writer, "08P01", "timeout waiting for the startup packet")
            if client is not None:
                await self._serve(client, inp, reader, writer)
        except (ClientGone, ConnectionError, asyncio.CancelledError):
            pass
        except (BadStartup, ProtocolViolation) as exc:
            self._refuse(writer, exc.sqlstate, exc.text)
        except ServerLost:
            self._refuse(writer, "08006", "the server closed the connection unexpectedly")
        except Exception:
            log.exception("pgdoor: client failed")
        finally:
            if client is not None:
                self._clients.pop(client.pid, None)
                listener = self.listeners.get(client.database)
                if listener is not None:
                    listener.drop(client.pid)
                if client.flusher is not None:
                    client.flusher.cancel()
                await self._give_back(client, abandon=True)
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    # ------------------------------------------------------------------ relay

    async def _serve(self, client: Client, inp: BufferedReader, reader: Any, writer: Any) -> None:
        if client.database in ADMIN_DATABASES:
            await self.admin.serve(inp, reader, writer)
            return
        pool = self.pools[client.database]
        relay = client.relay
        idle_limit = self.limits.idle_timeout
        write_timeout = self.limits.write_timeout
        data = inp.take()
        while True:
            if not data:
                self._release_held(client)
                if client.lease is not None:
                    try:  # idle holding a server session (in a transaction): bounded
                        async with asyncio.timeout(idle_limit):
                            data = await reader.read(READ_SIZE)
                    except TimeoutError:
                        text = "terminating connection due to idle-in-transaction timeout"
                        self._refuse(writer, "25P03", text)
                        return
                else:
                    data = await reader.read(READ_SIZE)
                if not data:
                    return
                self.bytes_received += len(data)
            client.busy = True
            has_messages = relay.feed_client(data)
            data = b""
            if not has_messages:
                continue
            lease = client.lease
            if lease is None and relay.only_terminate:
                return  # a goodbye needs no server session
            if lease is None and relay.local_only:  # LISTEN/UNLISTEN: no session needed
                relay.route(None)
                await self._apply_listens(client)
                self._write(client, bytes(relay.to_client))
                relay.to_client.clear()
                await self._drain(client, writer, write_timeout)
                continue
            if lease is None:
                try:
                    lease = await pool.acquire_session()
                except AcquireTimeout as exc:
                    self._refuse(writer, "53300", f"no server connection available: {exc}")
                    return
                except (ConnectFailed, PoolError) as exc:
                    self._refuse(writer, "08006", f"cannot reach the database: {exc}")
                    return
                client.lease = lease
                self.leases += 1
            conn = lease.connection
            out = relay.route(conn)
            if relay.listen_changes:
                await self._apply_listens(client)
            if relay.to_client:
                self._write(client, bytes(relay.to_client))
                relay.to_client.clear()
            if out:
                conn.writer.write(out)
            if relay.awaiting_server:
                await self._pump(client, conn, writer, write_timeout)
            if relay.listen_changes:  # made at a COMMIT
                await self._apply_listens(client)
            await self._drain(client, writer, write_timeout)
            if relay.terminated:
                return
            if relay.releasable:
                client.lease = None
                await pool.release(lease)

    async def _pump(
        self, client: Client, conn: PgConnection, writer: Any, write_timeout: float
    ) -> None:
        """Relay server replies until every pending one arrived (or COPY IN starts)."""
        relay = client.relay
        reader = conn.reader
        while relay.awaiting_server:
            chunk = await reader.read(READ_SIZE)
            if not chunk:
                conn.writer.close()
                raise ServerLost
            out = relay.feed_server(chunk)
            if relay.listen_changes:  # listening before the client hears it is
                await self._apply_listens(client)
            if out:
                self._write(client, out)
                if relay.awaiting_server:
                    await self._drain(client, writer, write_timeout)

    async def _give_back(self, client: Client, *, abandon: bool) -> None:
        lease, client.lease = client.lease, None
        if lease is None:
            return
        conn = lease.connection
        busy = not client.relay.idle or conn.is_closed()
        if abandon and conn.status != b"I":
            self.transactions_abandoned += 1
        pool = self.pools.get(client.database)
        if pool is None:
            conn.terminate()
            return
        with contextlib.suppress(Exception):
            await asyncio.shield(pool.release(lease, discard=busy))

    # -------------------------------------------------------------- statistics

    def clients(self) -> list[Client]:
        return list(self._clients.values())

    def statistics(self) -> PostgresFrontDoorStats:
        return PostgresFrontDoorStats(
            port=self.port,
            clients_connected=len(self._clients),
            clients_total=self.clients_total,
            clients_rejected=self.clients_rejected,
            auth_failures=self.auth_failures,
            cancel_requests=self.cancel_requests,
            leases=self.leases,
            clients_active=sum(1 for c in self._clients.values() if c.lease is not None),
            transactions_abandoned=self.transactions_abandoned,
            errors=dict(self.errors),
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
            prepared_statements=sum(len(c.relay.statements) for c in self._clients.values()),
            listeners=sum(lst.registry.listener_count() for lst in self.listeners.values()),
            listen_channels=sum(len(lst.registry.channels) for lst in self.listeners.values()),
            listen_connections=sum(1 for lst in self.listeners.values() if lst.connected),
            notifications_received=sum(
                lst.notifications_received for lst in self.listeners.values()
            ),
            notifications_delivered=self.notifications_delivered,
            notification_overflows=self.notification_overflows,
            databases={
                name: msgspec.convert(pool.statistics(), DatabaseStats, from_attributes=True)
                for name, pool in self.pools.items()
            },
        )
