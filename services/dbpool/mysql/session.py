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

Its parts: session_base.py (the session's state, packet I/O and refusals),
login.py (the handshake), leases.py (statements run on leases, transactions
pinned); this module runs the session and answers the client's commands.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable

from .leases import Leases
from .login import Login
from .relay import Relay, Statement, execute_tail
from .session_base import (
    COM_INIT_DB,
    COM_PING,
    COM_QUERY,
    COM_QUIT,
    COM_RESET_CONNECTION,
    COM_STMT_CLOSE,
    COM_STMT_EXECUTE,
    COM_STMT_PREPARE,
    COM_STMT_RESET,
    COMMAND_NAMES,
    ClientGone,
    DoorHost,
    Refusal,
)
from .statements import EndTransaction, Forward, SetAutocommit, SetNames, Use, classify
from .wire import MalformedPacket, ResponseKind

__all__ = ["DoorHost", "MySQLSession", "Refusal"]

log = logging.getLogger("services.dbpool.mysql")


class MySQLSession(Login, Leases):
    """One client of the MySQL front door (see the module docstring)."""

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
        except (ClientGone, ConnectionError):
            pass
        finally:
            self._stop_timers()
            self._give_back(abandoned=True)
            self.writer.close()

    # ------------------------------------------------------------------- commands

    async def _serve(self) -> None:
        while True:
            packet = await self._next_command()
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
