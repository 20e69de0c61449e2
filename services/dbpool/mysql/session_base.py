"""The base of one client session of the MySQL front door: its state, its packet
reads and writes, refusals (ERR packets), the command numbers, and `DoorHost`, what
a session needs of its front door. login.py, leases.py and session.py build on
`SessionBase`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import msgspec

from pools import MySQLLease, Pool

from ..slots import WaitTimer
from .config import MySQLConfig, MySQLUser
from .relay import READ_SIZE, Statement
from .statements import SetNames
from .wire import (
    SERVER_STATUS_AUTOCOMMIT,
    SERVER_STATUS_IN_TRANS,
    PacketReader,
    PacketTooLarge,
    err_packet,
    ok_packet,
)

__all__ = ["COMMAND_NAMES", "ClientGone", "DoorHost", "Refusal", "SessionBase"]

COM_QUIT, COM_INIT_DB, COM_QUERY, COM_PING = 0x01, 0x02, 0x03, 0x0E
COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_CLOSE, COM_STMT_RESET = 0x16, 0x17, 0x19, 0x1A
COM_RESET_CONNECTION = 0x1F
COMMAND_NAMES = {
    COM_QUIT: "quit",
    COM_INIT_DB: "init_db",
    COM_QUERY: "query",
    COM_PING: "ping",
    COM_STMT_PREPARE: "stmt_prepare",
    COM_STMT_EXECUTE: "stmt_execute",
    COM_STMT_CLOSE: "stmt_close",
    COM_STMT_RESET: "stmt_reset",
    COM_RESET_CONNECTION: "reset_connection",
}


class Refusal(msgspec.Struct, frozen=True):
    """An ERR packet's content."""

    errno: int
    sqlstate: str
    message: str


class ClientGone(Exception):
    """Writing to the client failed: it went away in the middle of a response."""


class DoorHost(Protocol):
    """What a session needs of its front door (`door.MySQLFrontDoor` is one)."""

    config: MySQLConfig
    pools: Mapping[str, Pool]
    next_connection_id: Callable[[], int]

    def admission(self, external: bool) -> Refusal | None: ...

    def allowed_databases(self, user: MySQLUser) -> list[str]: ...

    def release(self, pool: Pool, lease: MySQLLease, *, discard: bool) -> None: ...

    def count(self, command: str) -> None: ...

    def count_error(self, errno: int) -> None: ...

    def note_auth_failure(self) -> None: ...

    def note_abandoned(self) -> None: ...


class SessionBase:
    """One client's session state and packet I/O (see session.py)."""

    def __init__(self, door: DoorHost, reader: Any, writer: Any) -> None:
        self.door = door
        self.config = door.config
        self.reader = reader
        self.writer = writer
        self.external = writer.get_extra_info("peer_external") is not False
        self.accepted = False
        self.bytes_received = 0
        self.bytes_sent = 0
        self.user = ""
        self.database = ""
        self.autocommit = True
        self.names: SetNames | None = None
        self.lease: MySQLLease | None = None
        self.pool: Pool | None = None
        self.statements: dict[int, Statement] = {}
        self._next_statement = 1
        self._allowed: list[str] = []
        self._packets = PacketReader(self.config.max_allowed_packet)
        self._closing = False
        self.reading = False  # waiting for the client: safe to cancel
        self.commands: Counter[str] = Counter()
        # One idle timer and one write timer per session, re-armed lazily, instead
        # of a timeout scope around every read and every drain (most drains return
        # at once, and a command arrives long before the idle timeout).
        self._idle = WaitTimer(self.config.idle_timeout)
        self._drains = WaitTimer(self.config.write_timeout)

    def __repr__(self) -> str:
        state = "in-transaction" if self.lease is not None else "idle"
        return (
            f"<MySQLSession user={self.user!r} db={self.database!r} {state}"
            f" statements={len(self.statements)} commands={sum(self.commands.values())}>"
        )

    @property
    def in_transaction(self) -> bool:
        return self.lease is not None

    def shutdown(self) -> None:
        """Ask the session to end (server closing): it stops at its next read."""
        self._closing = True

    async def _next_command(self) -> tuple[int, bytes] | None:
        """The client's next command packet; None at EOF, after a refused packet, or
        when the client stayed silent for ``idle_timeout`` seconds."""
        try:
            return await self._idle.bound(self._read_packet())
        except TimeoutError:
            if self._idle.expired:
                return None
            raise

    def _stop_timers(self) -> None:
        self._idle.cancel()
        self._drains.cancel()

    async def _read_packet(self) -> tuple[int, bytes] | None:
        """The next client packet, None at EOF (a too large packet: ERR, then None)."""
        while True:
            try:
                packet = self._packets.next_packet()
            except PacketTooLarge as exc:
                await self._discard(self._packets.remaining())
                await self._refuse(
                    exc.seq + 1,
                    Refusal(
                        1153,
                        "08S01",
                        f"Got a packet bigger than 'max_allowed_packet' bytes ({exc})",
                    ),
                )
                return None
            if packet is not None:
                return packet
            if self._closing:
                return None
            self.reading = True
            try:
                data = await self.reader.read(READ_SIZE)
            finally:
                self.reading = False
            if not data:
                return None
            self.bytes_received += len(data)
            self._packets.feed(data)

    async def _discard(self, n: int) -> None:
        """Read and drop ``n`` bytes (the rest of a refused packet), so that a client
        still sending it reads the refusal instead of a reset connection."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.handshake_timeout):
                while n > 0:
                    data = await self.reader.read(min(n, READ_SIZE))
                    if not data:
                        return
                    self.bytes_received += len(data)
                    n -= len(data)

    async def _send(self, data: bytes | memoryview) -> None:
        try:
            self.writer.write(data)
            self.bytes_sent += len(data)
            await self._drain()
        except Exception as exc:
            raise ClientGone(repr(exc)) from exc

    async def _drain(self) -> None:
        """Wait until the client takes what was written, at most ``write_timeout``
        seconds (then TimeoutError)."""
        await self._drains.bound(self.writer.drain())

    async def _refuse(self, seq: int, refusal: Refusal) -> None:
        self.door.count_error(refusal.errno)
        await self._send(err_packet(seq, refusal.errno, refusal.sqlstate, refusal.message))

    def _database_refusal(self, user: str, database: str) -> Refusal | None:
        if database not in self.door.pools:
            return Refusal(1049, "42000", f"Unknown database '{database}'")
        if database not in self._allowed:
            return Refusal(
                1044, "42000", f"Access denied for user '{user}' to database '{database}'"
            )
        return None

    def _select(self, database: str) -> None:
        self.database = database
        self.pool = self.door.pools[database]

    def _status(self) -> int:
        status = SERVER_STATUS_AUTOCOMMIT if self.autocommit else 0
        return status | (SERVER_STATUS_IN_TRANS if self.lease is not None else 0)

    async def _ok(self) -> None:
        await self._send(ok_packet(1, self._status()))
