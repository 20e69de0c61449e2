"""One client of the MySQL front door: login, commands, transaction pooling.

Theory of operation
-------------------
The client speaks to the front door as to a MySQL server. Outside a
transaction it holds no server connection: each statement borrows a lease
from the pool of its database, runs, and gives it back. The session carries
what must survive from one lease to the next (autocommit, ``SET NAMES``, the
database, prepared statements) and replays it on each lease: ``SET
autocommit=0`` / ``SET NAMES`` are pipelined ahead of the statement, and a
prepared statement is prepared again on the lease it runs on. When a
statement leaves the server inside a transaction (``SERVER_STATUS_IN_TRANS``
in its status flags) the lease stays pinned to the client until a statement
ends the transaction. The response is forwarded as it is read, packet
boundaries followed by `wire.ResponseScanner`, values never decoded.

A client that goes away (EOF, idle timeout, a bad packet, server shutdown)
while it holds a lease has its transaction rolled back by the pool's release;
a lease interrupted in the middle of a response is discarded instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import msgspec

from pools import ConnectionLost, DatabaseError, MySQLLease, Pool, PoolError

from .config import MySQLConfig, MySQLUser
from .handshake import (
    CACHING_SHA2,
    NATIVE,
    HandshakeResponse,
    SslRequest,
    auth_switch,
    fast_auth_ok,
    greeting,
    parse_response,
    verify,
)
from .relay import READ_SIZE, Relay, Statement, execute_tail
from .statements import EndTransaction, Forward, SetAutocommit, SetNames, Use, classify
from .wire import (
    SERVER_STATUS_AUTOCOMMIT,
    SERVER_STATUS_IN_TRANS,
    MalformedPacket,
    PacketReader,
    PacketTooLarge,
    ResponseKind,
    err_packet,
    ok_packet,
)

__all__ = ["DoorHost", "MySQLSession", "Refusal"]

log = logging.getLogger("services.dbpool.mysql")

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


class _ClientGone(Exception):
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


class MySQLSession:
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

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        try:
            try:
                async with asyncio.timeout(self.config.handshake_timeout):
                    if not await self._login():
                        return
            except TimeoutError:
                return
            await self._serve()
        except (_ClientGone, ConnectionError):
            pass
        finally:
            self._give_back(abandoned=True)
            self.writer.close()

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
            async with asyncio.timeout(self.config.write_timeout):
                await self.writer.drain()
        except Exception as exc:
            raise _ClientGone(repr(exc)) from exc

    async def _refuse(self, seq: int, refusal: Refusal) -> None:
        self.door.count_error(refusal.errno)
        await self._send(err_packet(seq, refusal.errno, refusal.sqlstate, refusal.message))

    # ---------------------------------------------------------------------- login

    async def _login(self) -> bool:
        refusal = self.door.admission(self.external)
        nonce = bytes(b % 127 + 1 for b in os.urandom(20))  # no NUL inside
        plugin = self._greeting_plugin()
        await self._send(
            greeting(self.door.next_connection_id(), nonce, self.config.server_version, plugin)
        )
        packet = await self._read_packet()
        if packet is None:
            return False
        seq, body = packet
        try:
            response = parse_response(body)
        except MalformedPacket as exc:
            await self._refuse(seq + 1, Refusal(1043, "08S01", f"Bad handshake: {exc}"))
            return False
        if isinstance(response, SslRequest):
            await self._refuse(
                seq + 1,
                Refusal(
                    1043,
                    "08S01",
                    "Bad handshake: TLS is not supported by this server; connect without TLS",
                ),
            )
            return False
        if refusal is not None:
            await self._refuse(seq + 1, refusal)
            return False
        return await self._authenticate(seq + 1, response, nonce)

    def _greeting_plugin(self) -> str:
        users = self.config.users.values()
        if users and all(u.plugin == CACHING_SHA2 for u in users):
            return CACHING_SHA2
        return NATIVE

    async def _authenticate(self, seq: int, response: HandshakeResponse, nonce: bytes) -> bool:
        user = self.config.users.get(response.user)
        proof = response.auth_response
        if user is not None and response.plugin != user.plugin:
            await self._send(auth_switch(seq, user.plugin, nonce))
            packet = await self._read_packet()
            if packet is None:
                return False
            seq, proof = packet[0] + 1, packet[1]
        if user is None or not verify(user.plugin, user.password, nonce, proof):
            self.door.note_auth_failure()
            using = "YES" if proof not in (b"", b"\0") else "NO"
            await self._refuse(
                seq,
                Refusal(
                    1045,
                    "28000",
                    f"Access denied for user '{response.user}' (using password: {using})",
                ),
            )
            return False
        self._allowed = self.door.allowed_databases(user)
        database = response.database or user.database or (self._allowed[0] if self._allowed else "")
        refusal = self._database_refusal(response.user, database)
        if refusal is not None:
            await self._refuse(seq, refusal)
            return False
        self.user = response.user
        self._select(database)
        self.names = _names_for(response.collation)
        if user.plugin == CACHING_SHA2 and proof not in (b"", b"\0"):
            await self._send(fast_auth_ok(seq))
            seq += 1
        self.accepted = True
        await self._send(ok_packet(seq, self._status()))
        return True

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

    # ------------------------------------------------------------------- commands

    def _status(self) -> int:
        status = SERVER_STATUS_AUTOCOMMIT if self.autocommit else 0
        return status | (SERVER_STATUS_IN_TRANS if self.lease is not None else 0)

    async def _ok(self) -> None:
        await self._send(ok_packet(1, self._status()))

    async def _serve(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.config.idle_timeout):
                    packet = await self._read_packet()
            except TimeoutError:
                return
            if packet is None:
                return
            _, body = packet
            command = body[0] if body else -1
            name = COMMAND_NAMES.get(command, "unsupported")
            self.commands[name] += 1
            self.door.count(name)
            if command == COM_QUIT:
                return
            handler = self._handlers.get(command)
            if handler is None:
                await self._refuse(
                    1,
                    Refusal(
                        1047,
                        "08S01",
                        f"Unknown command: 0x{command & 0xFF:02x}"
                        " is not supported by the fabric MySQL front door",
                    ),
                )
                continue
            await handler(self, body)

    async def _init_db(self, body: bytes) -> None:
        await self._use(body[1:].decode("utf-8", "replace"))

    async def _use(self, database: str) -> None:
        if self.lease is not None and database != self.database:
            await self._refuse(
                1,
                Refusal(
                    1105,
                    "HY000",
                    "cannot change the database inside a transaction (fabric MySQL front door)",
                ),
            )
            return
        refusal = self._database_refusal(self.user, database)
        if refusal is not None:
            await self._refuse(1, refusal)
            return
        self._select(database)
        await self._ok()

    async def _ping(self, body: bytes) -> None:
        await self._ok()

    async def _reset_connection(self, body: bytes) -> None:
        self._give_back(abandoned=False)
        self.autocommit = True
        self.names = None
        self.statements.clear()
        await self._ok()

    async def _query(self, body: bytes) -> None:
        what = classify(body[1:])
        if self.lease is None:
            if isinstance(what, SetAutocommit):
                self.autocommit = what.value
                return await self._ok()
            if isinstance(what, SetNames):
                self.names = None if what.is_default else what
                return await self._ok()
            if isinstance(what, EndTransaction):
                return await self._ok()
        if isinstance(what, Use):
            return await self._use(what.database)
        if isinstance(what, SetNames):  # inside a transaction: run it, and keep it after
            self.names = None if what.is_default else what
        dirty = not isinstance(what, Forward) or what.dirty

        async def script(wire: Relay) -> None:
            wire.send(body)
            await wire.response(ResponseKind.RESULT, forward=True)

        await self._on_lease(script, dirty=dirty)

    async def _stmt_prepare(self, body: bytes) -> None:
        if len(self.statements) >= self.config.max_prepared_statements:
            await self._refuse(
                1,
                Refusal(
                    1461,
                    "42000",
                    f"Can't create more than max_prepared_statements ({len(self.statements)})",
                ),
            )
            return

        async def script(wire: Relay) -> None:
            wire.send(body)
            scanner, data = await wire.response(ResponseKind.PREPARE, forward=False)
            if scanner.prepared is None:
                await self._send(data)
                return
            server_id, _, params = scanner.prepared
            wire.send(b"\x19" + struct.pack("<I", server_id))  # COM_STMT_CLOSE: no answer
            client_id = self._next_statement
            self._next_statement = self._next_statement % 0xFFFFFFFE + 1
            self.statements[client_id] = Statement(body[1:], params)
            await self._send(data[:5] + struct.pack("<I", client_id) + data[9:])

        await self._on_lease(script, dirty=False)

    async def _stmt_execute(self, body: bytes) -> None:
        stmt = self._statement(body)
        if stmt is None:
            return await self._unknown_statement(body, "mysqld_stmt_execute")
        try:
            tail = execute_tail(body, stmt)
        except MalformedPacket as exc:
            return await self._refuse(
                1, Refusal(1210, "HY000", f"Incorrect arguments to mysqld_stmt_execute: {exc}")
            )

        async def script(wire: Relay) -> None:
            wire.send(b"\x16" + stmt.sql)
            scanner, data = await wire.response(ResponseKind.PREPARE, forward=False)
            if scanner.prepared is None:
                await self._send(data)
                return
            server_id = struct.pack("<I", scanner.prepared[0])
            wire.send(b"\x17" + server_id + tail)
            await wire.response(ResponseKind.RESULT, forward=True)
            wire.send(b"\x19" + server_id)

        await self._on_lease(script, dirty=False)

    async def _stmt_close(self, body: bytes) -> None:
        if len(body) >= 5:
            self.statements.pop(int.from_bytes(body[1:5], "little"), None)

    async def _stmt_reset(self, body: bytes) -> None:
        if self._statement(body) is None:
            return await self._unknown_statement(body, "mysqld_stmt_reset")
        await self._ok()

    def _statement(self, body: bytes) -> Statement | None:
        return self.statements.get(int.from_bytes(body[1:5], "little")) if len(body) >= 5 else None

    async def _unknown_statement(self, body: bytes, where: str) -> None:
        sid = int.from_bytes(body[1:5], "little") if len(body) >= 5 else 0
        await self._refuse(
            1,
            Refusal(1243, "HY000", f"Unknown prepared statement handler ({sid}) given to {where}"),
        )

    _handlers: dict[int, Callable[[MySQLSession, bytes], Awaitable[None]]] = {
        COM_INIT_DB: _init_db,
        COM_QUERY: _query,
        COM_PING: _ping,
        COM_STMT_PREPARE: _stmt_prepare,
        COM_STMT_EXECUTE: _stmt_execute,
        COM_STMT_CLOSE: _stmt_close,
        COM_STMT_RESET: _stmt_reset,
        COM_RESET_CONNECTION: _reset_connection,
    }

    # --------------------------------------------------------------------- leases

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
                return await self._refuse(1, _pool_refusal(exc))
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
        except _ClientGone:
            if self.lease is not None:  # its transaction ends with the connection
                self.door.note_abandoned()
            self.lease = None
            self.door.release(pool, lease, discard=True)
            raise
        except (ConnectionLost, DatabaseError, PoolError, MalformedPacket, OSError) as exc:
            self.lease = None
            self.door.release(pool, lease, discard=True)
            if wire.forwarded:  # part of a response is out: the client cannot resync
                raise _ClientGone(repr(exc)) from exc
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


def _names_for(collation: int) -> SetNames | None:
    """The SET NAMES a client's handshake collation needs (None: the pool's default)."""
    from pymysql.charset import charset_by_id

    try:
        charset = charset_by_id(collation)
    except KeyError:
        return None
    if charset.name == "utf8mb4":
        return None
    return SetNames(charset.name, None)


def _pool_refusal(exc: PoolError) -> Refusal:
    name = type(exc).__name__
    if name == "AcquireTimeout":
        return Refusal(1040, "08004", f"Too many connections: {exc}")
    if name == "PoolClosed":
        return Refusal(1053, "08S01", f"Server shutdown in progress: {exc}")
    return Refusal(2003, "HY000", f"Can't connect to the database: {exc}")
