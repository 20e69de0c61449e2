"""A bare dbpool client over real TCP (the ingress port), for clients that misbehave:
it sends frames and reads exactly what it is told to, nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import msgspec

from services.dbpool.messages import Begin, Error, Query, Request, Response
from services.dbpool.protocol import ClientConnection

__all__ = ["HelloStatus", "RawClient", "error_code"]

#: ``ok`` / ``unsupported_version`` / ``too_many_clients`` / ``server_closing`` as sent by
#: the server; ``closed``: the connection ended without a server hello; ``error``: the
#: connect itself failed.
HelloStatus = str

_STATUS = {0: "ok", 1: "unsupported_version", 2: "too_many_clients", 3: "server_closing"}
_response = msgspec.msgpack.Decoder(Response)


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._next_id = 0

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> tuple[RawClient | None, str]:
        """Connect and handshake: ``(client, "ok")`` or ``(None, why not)``."""
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            return None, f"error: {exc.strerror or exc}"
        client = cls(reader, writer)
        writer.write(ClientConnection().hello())
        try:
            hello = await reader.readexactly(16)
        except (asyncio.IncompleteReadError, ConnectionError):
            client.abort()
            return None, "closed"
        status = _STATUS.get(struct.unpack(">H", hello[6:8])[0], "unknown")
        if status != "ok":
            client.abort()
            return None, status
        return client, "ok"

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def send(self, request: Request) -> None:
        body = msgspec.msgpack.encode(request)
        self.writer.write(struct.pack(">I", len(body)) + body)

    async def receive(self) -> Response:
        (length,) = struct.unpack(">I", await self.reader.readexactly(4))
        response: Response = _response.decode(await self.reader.readexactly(length))
        return response

    async def call(self, request: Request) -> Response:
        self.send(request)
        await self.writer.drain()
        return await self.receive()

    async def begin(self, db: str) -> Response:
        return await self.call(Begin(id=self.new_id(), db=db))

    async def query(self, db: str, sql: str) -> Response:
        return await self.call(Query(id=self.new_id(), db=db, sql=sql))

    def abort(self) -> None:
        """Drop the connection at once (a reset, no goodbye)."""
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def error_code(response: Response) -> str | None:
    return response.code if isinstance(response, Error) else None
