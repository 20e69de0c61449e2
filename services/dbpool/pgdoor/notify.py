"""The dedicated LISTEN connection of one database (I/O around `ChannelRegistry`).

Opened on the first LISTEN of any client of the database, outside the
transaction pool (it takes none of the pool's ``max_size`` slots: one more
PostgreSQL connection per database while someone listens), closed when the last
listener leaves. It LISTENs on the union of the clients' channels and hands
every NotificationResponse to ``deliver(listeners, message)``. When it dies it
is opened again with backoff and LISTENs again on every channel; notifications
sent while it was down are lost. It shows in ``pg_stat_activity`` with the
database's application_name (``fabric`` when unset) followed by `` listen``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

import msgspec

from pools import DatabaseConfig, PgConnection

from .listen import ChannelRegistry, notification, parse_notification
from .wire import message

__all__ = ["DatabaseListener"]

log = logging.getLogger("services.dbpool.pgdoor")

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0

Deliver = Callable[[frozenset[Hashable], bytes], None]


class DatabaseListener:
    """One database's channel registry and its dedicated server connection."""

    def __init__(self, database: str, config: DatabaseConfig, deliver: Deliver) -> None:
        self.database = database
        self.config = config
        self.registry = ChannelRegistry()
        self._deliver = deliver
        self._conn: PgConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._acks: deque[asyncio.Future[None]] = deque()
        self._synced = asyncio.Event()
        self.connects = 0
        self.connection_losses = 0
        self.notifications_received = 0

    def __repr__(self) -> str:
        state = "connected" if self._conn is not None else "down"
        return (
            f"<DatabaseListener {self.database} {state} channels={len(self.registry.channels)} "
            f"listeners={self.registry.listener_count()}>"
        )

    @property
    def connected(self) -> bool:
        """The dedicated connection is up and listens on every channel."""
        return self._conn is not None and self._synced.is_set()

    @property
    def running(self) -> bool:
        return self._task is not None

    async def change(self, client: Hashable, changes: list[tuple[str, str]]) -> None:
        """Apply a client's LISTEN/UNLISTEN changes; returns once the dedicated
        connection listens on the new channels (or ``connect_timeout`` passed)."""
        statements: list[str] = []
        for verb, channel in changes:
            if verb == "listen":
                statements += self.registry.listen(client, channel)
            else:
                statements += self.registry.unlisten(client, channel)
        if self.registry.empty:
            await self.stop()
            return
        if self._task is None:
            self._synced.clear()
            self._task = asyncio.create_task(self._run(), name=f"pgdoor-listen-{self.database}")
        ack = self._send(statements) if statements else None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.connect_timeout):
                if ack is not None:
                    await ack
                else:
                    await self._synced.wait()

    def drop(self, client: Hashable) -> None:
        """The client left: its channels are dropped (no wait for the server)."""
        statements = self.registry.drop(client)
        if self.registry.empty:
            self._halt()
        elif statements:
            self._send(statements)

    async def stop(self) -> None:
        task = self._halt()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _halt(self) -> asyncio.Task[None] | None:
        """Close the dedicated connection now (a LISTEN that comes next opens
        another one); returns the reading task, cancelled."""
        task, self._task = self._task, None
        conn, self._conn = self._conn, None
        self._synced.clear()
        self._release_acks()
        if task is not None:
            task.cancel()
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                conn.writer.write(message(b"X"))
            conn.writer.close()
        return task

    def _send(self, statements: list[str]) -> asyncio.Future[None] | None:
        """Run ``statements`` as one simple query on the connection (when it is up:
        otherwise the next connection LISTENs on every channel anyway)."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return None
        sql = "; ".join(statements).encode()
        conn.writer.write(message(b"Q", sql + b"\0"))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.append(ack)
        return ack

    def _release_acks(self) -> None:
        while self._acks:
            ack = self._acks.popleft()
            if not ack.done():
                ack.set_result(None)

    async def _run(self) -> None:
        delay = _BACKOFF_FIRST
        while not self.registry.empty:
            try:
                conn = await self._connect()
            except Exception as exc:
                log.warning("pgdoor: LISTEN connection to %s failed: %s", self.database, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            self.connects += 1
            self._conn = conn
            resync = self._send(self.registry.resync())
            if resync is not None:
                resync.add_done_callback(lambda _: self._synced.set())
            try:
                await self._read(conn)
            except Exception as exc:
                if self._conn is conn:
                    log.warning("pgdoor: LISTEN connection to %s lost: %s", self.database, exc)
            finally:
                if self._conn is conn:
                    self._conn = None
                    self._synced.clear()
                    self._release_acks()
                conn.terminate()
            self.connection_losses += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    async def _connect(self) -> PgConnection:
        cfg = msgspec.structs.replace(
            self.config, application_name=f"{self.config.application_name or 'fabric'} listen"
        )
        return await PgConnection.open(cfg)

    async def _read(self, conn: PgConnection) -> None:
        while True:
            kind, body = await conn.read_message()
            if kind == b"A":
                pid, channel, payload = parse_notification(body)
                self.notifications_received += 1
                listeners = self.registry.listeners(channel)
                if listeners:
                    self._deliver(listeners, notification(pid, channel, payload))
            elif kind == b"Z":
                if self._acks:
                    ack = self._acks.popleft()
                    if not ack.done():
                        ack.set_result(None)
            elif kind == b"E":
                log.warning("pgdoor: LISTEN connection to %s: %r", self.database, body)

    def statistics(self) -> dict[str, Any]:
        return {
            "channels": len(self.registry.channels),
            "listeners": self.registry.listener_count(),
            "connected": self.connected,
            "connects": self.connects,
            "notifications_received": self.notifications_received,
        }
