"""What the front door answers to clients it refuses: a protocol ErrorResponse
with a SQLSTATE, never a crash or a silent close (real sockets, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import socket
import struct

import asyncpg
import pytest

from services.dbpool.messages import Limits

from .conftest import PASSWORD, Door, eventually, front_door

I32 = struct.Struct("!i")


def startup(**params: str) -> bytes:
    body = I32.pack(196608) + b"".join(
        k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()
    )
    body += b"\0"
    return I32.pack(len(body) + 4) + body


async def exchange(door: Door, data: bytes) -> bytes:
    """Send ``data``, read until the front door closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def error_fields(reply: bytes) -> dict[str, str]:
    assert reply[:1] == b"E", reply
    (size,) = I32.unpack_from(reply, 1)
    fields = {}
    for part in reply[5 : 1 + size].split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode()
    return fields


@pytest.mark.parametrize(
    ("packet", "sqlstate"),
    [
        (I32.pack(4), "08P01"),  # shorter than any startup packet
        (I32.pack(1_000_000) + b"x" * 16, "08P01"),  # longer than PostgreSQL allows
        (I32.pack(8) + I32.pack(2 << 16), "0A000"),  # protocol 2.0
        (I32.pack(11) + I32.pack(196608) + b"use", "08P01"),  # no terminator
        (startup(database="test"), "28000"),  # no user
    ],
    ids=["too-short", "too-long", "protocol-2", "no-terminator", "no-user"],
)
async def test_bad_startup_packets_get_a_fatal_error(
    door: Door, packet: bytes, sqlstate: str
) -> None:
    reply = await exchange(door, packet)
    fields = error_fields(reply)
    assert fields["S"] == "FATAL" and fields["C"] == sqlstate
    await door.settled()
    # and the front door still serves
    conn = await door.connect()
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()


async def test_encryption_requests_are_refused_with_N_then_startup_proceeds(door: Door) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    try:
        writer.write(I32.pack(8) + I32.pack(80877103))  # SSLRequest
        assert await reader.readexactly(1) == b"N"
        writer.write(I32.pack(8) + I32.pack(80877104))  # GSSENCRequest
        assert await reader.readexactly(1) == b"N"
        writer.write(startup(user="tool", database=door.database))
        reply = await reader.readuntil(b"Z\x00\x00\x00\x05I")
        assert reply.startswith(b"R\x00\x00\x00\x08\x00\x00\x00\x00")  # AuthenticationOk
        assert b"server_version\x00" in reply and b"K\x00\x00\x00\x0c" in reply
    finally:
        writer.close()
    # asyncpg with sslmode=prefer falls back to a plain connection
    conn = await door.connect(ssl="prefer")
    assert await conn.fetchval("SELECT 2") == 2
    await conn.close()


async def test_wrong_password_unknown_user_and_database(door: Door) -> None:
    with pytest.raises(
        asyncpg.InvalidPasswordError, match='password authentication failed for user "app"'
    ):
        await door.connect(password="not " + PASSWORD)
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await door.connect(user="nobody", password="x")
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncpg.connect(host="127.0.0.1", port=door.port, user="tool", database="nope")
    stats = door.stats()
    assert stats.auth_failures == 2
    assert stats.errors["28P01"] == 1 and stats.errors["3D000"] == 1


async def test_unsupported_startup_parameters_are_refused(door: Door) -> None:
    with pytest.raises(asyncpg.FeatureNotSupportedError, match="options"):
        await door.connect(server_settings={"options": "-c work_mem=1MB"})
    with pytest.raises(asyncpg.FeatureNotSupportedError, match="search_path"):
        await door.connect(server_settings={"search_path": "elsewhere"})
    conn = await door.connect(server_settings={"application_name": "mine"})
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()


async def test_oversized_messages_get_an_error_and_the_connection_closes() -> None:
    async with front_door(limits=Limits(max_frame_size=64 * 1024)) as door:
        conn = await door.connect()
        # a FATAL ErrorResponse (54000) ends the connection; asyncpg reports its text
        with pytest.raises(asyncpg.ConnectionDoesNotExistError, match="larger than the limit"):
            await conn.fetchval("SELECT length($1::text)", "x" * 100_000)
        assert conn.is_closed()
        await door.settled()
        small = await door.connect()
        assert await small.fetchval("SELECT length($1::text)", "x" * 1000) == 1000
        await small.close()
        assert door.stats().errors["54000"] == 1


async def test_unknown_message_type_is_a_protocol_violation(door: Door) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    try:
        writer.write(startup(user="tool", database=door.database))
        await reader.readuntil(b"Z\x00\x00\x00\x05I")
        writer.write(b"?" + I32.pack(4))
        fields = error_fields(await asyncio.wait_for(reader.read(), 10))
        assert fields["C"] == "08P01"
    finally:
        writer.close()
    await door.settled()


async def test_no_server_session_in_time_is_a_fatal_53300() -> None:
    async with front_door(max_size=1, acquire_timeout=0.3) as door:
        holder = await door.connect()
        late = await door.connect()
        try:
            await holder.execute("BEGIN")
            with pytest.raises(asyncpg.ConnectionDoesNotExistError, match="no server connection"):
                await late.fetchval("SELECT 1")
            await holder.execute("COMMIT")
            assert door.stats().errors["53300"] == 1
            assert door.pool().timeouts == 1
        finally:
            await holder.close()
            late.terminate()


async def test_idle_in_transaction_is_ended_and_rolled_back() -> None:
    async with front_door(limits=Limits(idle_timeout=0.2)) as door:
        idle_client = await door.connect()
        await idle_client.execute("BEGIN")
        await eventually(lambda: door.stats().clients_connected == 0)
        stats = door.stats()
        assert stats.transactions_abandoned == 1 and stats.errors["25P03"] == 1
        # the FATAL came while asyncpg was idle: it reports the closed connection
        # in one of several ways, depending on when it read it
        closed = (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
            ConnectionError,
        )
        with pytest.raises(closed):
            await idle_client.fetchval("SELECT 1")
        idle_client.terminate()
        await door.settled()
        # a client idle outside a transaction holds no session and stays
        calm = await door.connect()
        await asyncio.sleep(0.4)
        assert await calm.fetchval("SELECT 3") == 3
        await calm.close()


async def test_an_unreachable_database_is_a_fatal_08006() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    async with front_door(min_size=0, port=dead_port, acquire_timeout=5.0) as door:
        with pytest.raises(asyncpg.ConnectionFailureError, match="cannot reach the database"):
            await door.connect()
