"""The server side of one lease exchange of the MySQL front door.

`Relay` writes commands on a leased connection's stream and follows the
responses with `wire.ResponseScanner`, forwarding them to the client as they
are read (or keeping them, for a prepare the front door rewrites). The
session's settings go out ahead of the first command in the same write and
their answers are read and dropped. `execute_tail` rewrites a client's
COM_STMT_EXECUTE for a statement prepared again on another connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pools import ConnectionLost, DatabaseError

from .wire import MalformedPacket, ResponseKind, ResponseScanner, frame

__all__ = ["COM_PING", "READ_SIZE", "Relay", "Statement", "execute_tail"]

READ_SIZE = 65536
COM_PING = 0x0E


class Statement:
    """A client's prepared statement: its text and the parameter types it sent last."""

    __slots__ = ("params", "sql", "types")

    def __init__(self, sql: bytes, params: int) -> None:
        self.sql = sql
        self.params = params
        self.types: bytes | None = None


class Relay:
    """The server side of one lease exchange: sends commands, follows responses."""

    def __init__(
        self,
        forward: Callable[[bytes | memoryview], Awaitable[None]],
        prefix: list[bytes],
        *,
        known_status: int,
    ) -> None:
        self.forward_to_client = forward
        self.prefix = prefix
        self.known_status = known_status
        self.reader: Any = None
        self.writer: Any = None
        self.leftover = b""
        self.unsent: list[bytes] = []
        self.status: int | None = None
        self.forwarded = False
        self.failed = False

    def send(self, *commands: bytes) -> None:
        """Write commands (after the session's settings, in the same write)."""
        unsent, self.unsent = self.unsent, []
        self.writer.write(b"".join(frame(0, c) for c in (*unsent, *commands)))

    async def start(self) -> None:
        """Queue the session's settings; they go out with the first command and
        their answers are read before its response."""
        self.unsent = list(self.prefix)

    async def _skip_prefix(self) -> None:
        if self.unsent:
            self.send()
        prefix, self.prefix = self.prefix, []
        for _ in prefix:
            scanner, _ = await self._scan(ResponseKind.SIMPLE, forward=False)
            if scanner.error is not None:
                raise DatabaseError(f"could not replay the session's settings: {scanner.error[1]}")

    async def response(self, kind: ResponseKind, *, forward: bool) -> tuple[ResponseScanner, bytes]:
        """Follow one response; forward it to the client as it arrives, or return it."""
        await self._skip_prefix()
        scanner, data = await self._scan(kind, forward=forward)
        if scanner.status is not None:
            self.status = scanner.status
        if scanner.error is not None:
            self.failed = True
        return scanner, data

    async def _scan(self, kind: ResponseKind, *, forward: bool) -> tuple[ResponseScanner, bytes]:
        scanner = ResponseScanner(kind)
        kept: list[bytes] = []
        while not scanner.done:
            data = self.leftover
            self.leftover = b""
            if not data:
                data = await self.reader.read(READ_SIZE)
                if not data:
                    raise ConnectionLost("MySQL connection lost: the server closed the connection")
            n = scanner.feed(data)
            self.leftover = data[n:]
            if forward:
                self.forwarded = True
                await self.forward_to_client(data[:n] if n < len(data) else data)
            else:
                kept.append(data[:n])
        return scanner, b"".join(kept)

    async def finish(self) -> int:
        """The status flags the exchange ended with: after an error (an ERR packet
        carries none, and a failed statement may have ended or begun a
        transaction) the server is asked with COM_PING; after responses without
        flags (a prepare) they are what they were."""
        await self._skip_prefix()
        if self.failed:
            self.send(bytes((COM_PING,)))
            scanner, _ = await self._scan(ResponseKind.SIMPLE, forward=False)
            self.status = scanner.status if scanner.status is not None else 0
        elif self.status is None:
            self.status = self.known_status
        if self.leftover:
            raise MalformedPacket("the server sent more than the responses asked for")
        return self.status


def execute_tail(body: bytes, stmt: Statement) -> bytes:
    """A COM_STMT_EXECUTE after its statement id, rewritten for a freshly prepared
    statement: no cursor, and the parameter types always included."""
    if len(body) < 10:
        raise MalformedPacket("COM_STMT_EXECUTE shorter than 10 bytes")
    iterations = body[6:10]
    n = stmt.params
    if n == 0:
        return b"\x00" + iterations
    pos = 10 + (n + 7) // 8
    if len(body) < pos + 1:
        raise MalformedPacket("COM_STMT_EXECUTE ends inside its NULL bitmap")
    nulls = body[10:pos]
    if body[pos]:
        types = body[pos + 1 : pos + 1 + 2 * n]
        if len(types) < 2 * n:
            raise MalformedPacket("COM_STMT_EXECUTE ends inside its parameter types")
        stmt.types = types
        values = body[pos + 1 + 2 * n :]
    else:
        if stmt.types is None:
            raise MalformedPacket("no parameter types were ever sent for this statement")
        values = body[pos + 1 :]
    return b"\x00" + iterations + nulls + b"\x01" + stmt.types + values
