"""One client of the PostgreSQL front door: its buffered reads (`BufferedReader`),
its state (`Client`: key, lease, relay, notifications held), and `DoorBase`, what
the front door's parts (login.py, delivery.py, door.py) share: its attributes and
the writes to a client.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from typing import Any

from pools import DatabaseConfig, PgWireLease, PgWirePool

from ..messages import Limits
from .config import PostgresFrontDoorConfig
from .notify import DatabaseListener
from .relay import ProtocolViolation, Relay
from .scram import ScramVerifier
from .wire import I32, error_response

__all__ = ["READ_SIZE", "BufferedReader", "Client", "ClientGone", "DoorBase", "ServerLost"]

READ_SIZE = 65536

#: reply bytes written to a client between two waits for it to read them
DRAIN_AFTER = 64 * 1024


class ClientGone(Exception):
    """The client went away."""


class ServerLost(Exception):
    """The server session closed under a client."""


class BufferedReader:
    """Buffered reads from a stream that only offers ``read(n)``."""

    __slots__ = ("_buf", "_reader")

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._buf = b""

    async def exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = await self._reader.read(READ_SIZE)
            if not chunk:
                raise ClientGone
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    async def typed(self, limit: int) -> tuple[bytes, bytes]:
        header = await self.exactly(5)
        size = I32.unpack_from(header, 1)[0]
        if size < 4 or size - 4 > limit:
            raise ProtocolViolation("08P01", f"invalid message length {size}")
        return header[:1], await self.exactly(size - 4)

    def take(self) -> bytes:
        out, self._buf = self._buf, b""
        return out


class Client:
    """One connected client of the front door."""

    __slots__ = (
        "busy",
        "database",
        "flusher",
        "held",
        "held_bytes",
        "key",
        "lease",
        "pid",
        "relay",
        "task",
        "unflushed",
        "user",
        "writer",
    )

    def __init__(
        self, pid: int, key: bytes, user: str, database: str, relay: Relay, writer: Any
    ) -> None:
        self.pid = pid
        self.key = key
        self.user = user
        self.database = database
        self.relay = relay
        self.writer = writer
        self.task = asyncio.current_task()
        self.lease: PgWireLease | None = None
        self.unflushed = 0  # bytes written to the client since the last drain
        #: between reading a client's messages and writing the last reply to them:
        #: notifications are held until then
        self.busy = False
        self.held: deque[bytes] = deque()
        self.held_bytes = 0
        self.flusher: asyncio.Task[None] | None = None


class DoorBase:
    """What the front door's parts share: the door's state (set by
    `door.PgFrontDoor.__init__`) and the writes to a client."""

    config: PostgresFrontDoorConfig
    limits: Limits
    database_configs: dict[str, DatabaseConfig]
    pools: dict[str, PgWirePool]
    listeners: dict[str, DatabaseListener]
    _verifiers: dict[str, ScramVerifier]
    _clients: dict[int, Client]
    _closing: bool
    clients_total: int
    clients_rejected: int
    auth_failures: int
    cancel_requests: int
    errors: Counter[str]
    bytes_sent: int
    notifications_delivered: int
    notification_overflows: int

    def _refuse(self, writer: Any, sqlstate: str, text: str) -> None:
        self.errors[sqlstate] += 1
        with contextlib.suppress(Exception):
            writer.write(error_response(sqlstate, text, severity="FATAL"))

    def _write(self, client: Client, data: bytes) -> None:
        client.writer.write(data)
        client.unflushed += len(data)
        self.bytes_sent += len(data)

    @staticmethod
    async def _drain(client: Client, writer: Any, write_timeout: float) -> None:
        """Wait (at most ``write_timeout``) for the client to take its replies, once
        ``DRAIN_AFTER`` bytes were written since the last wait: what a client does
        not read stays bounded without a wait per reply."""
        transport = getattr(writer, "transport", None)
        if transport is not None and not transport.get_write_buffer_size():
            client.unflushed = 0  # all written already (an asyncio stream)
            return
        if client.unflushed < DRAIN_AFTER:
            return
        client.unflushed = 0
        async with asyncio.timeout(write_timeout):
            await writer.drain()


def _unread(writer: Any) -> int:
    """Bytes written to a client that it has not taken yet (a socket's write buffer,
    or the outbound buffer of a virtual network stream)."""
    transport = getattr(writer, "transport", None)
    if transport is not None:
        return int(transport.get_write_buffer_size())
    end = getattr(writer, "end", None)
    return int(getattr(end, "outbound_buffered", 0))
