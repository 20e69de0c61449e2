"""LISTEN/NOTIFY through the front door: asyncpg's add_listener and psql against
the real PostgreSQL, one dedicated server connection per database behind them."""

from __future__ import annotations

import asyncio
import os
import struct
import uuid
from typing import Any

import asyncpg
import pytest

from .conftest import PASSWORD, Door, eventually, front_door


class _Inbox:
    """What one asyncpg listener received: (channel, payload) in order."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []

    def __call__(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.got.append((channel, payload))


def _chan(tag: str) -> str:
    return f"pgdoor_{tag}_{uuid.uuid4().hex[:8]}"


async def _server_listen_sessions(application_name: str) -> int:
    conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database="test")
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                application_name,
            )
        )
    finally:
        await conn.close()


async def test_notifications_reach_each_listener_of_their_channel_once(door: Door) -> None:
    jobs, other = _chan("jobs"), _chan("other")
    a, b, c, sender = [await door.connect() for _ in range(4)]
    inbox_a, inbox_b, inbox_c = _Inbox(), _Inbox(), _Inbox()
    direct = await asyncpg.connect(host="127.0.0.1", user="postgres", database=door.database)
    try:
        await a.add_listener(jobs, inbox_a)
        await b.add_listener(jobs, inbox_b)
        await c.add_listener(other, inbox_c)
        stats = door.stats()
        assert (stats.listeners, stats.listen_channels, stats.listen_connections) == (3, 2, 1)
        # the clients' sessions go back to the pool: no session is held for listening
        assert stats.clients_active == 0
        await sender.execute(f"NOTIFY {jobs}, 'one'")
        await sender.execute("SELECT pg_notify($1, 'two')", jobs)
        await direct.execute(f"NOTIFY {jobs}, 'three'")  # straight to PostgreSQL
        await sender.execute(f"NOTIFY {other}, 'four'")
        async with sender.transaction():  # delivered at commit only
            await sender.execute(f"NOTIFY {jobs}, 'five'")
            await sender.execute(f"NOTIFY {jobs}, 'five'")  # folded by PostgreSQL
        want = [(jobs, "one"), (jobs, "two"), (jobs, "three"), (jobs, "five")]
        await eventually(lambda: len(inbox_a.got) >= 4 and len(inbox_b.got) >= 4)
        await eventually(lambda: len(inbox_c.got) >= 1)
        # between notifications a listener's queries still work
        assert await a.fetchval("SELECT 41 + 1") == 42
        await sender.execute(f"NOTIFY {jobs}, 'six'")
        await eventually(lambda: len(inbox_a.got) >= 5 and len(inbox_b.got) >= 5)
        await asyncio.sleep(0.2)  # room for a duplicate to show up
        assert inbox_a.got == [*want, (jobs, "six")]
        assert inbox_b.got == [*want, (jobs, "six")]
        assert inbox_c.got == [(other, "four")]
        # UNLISTEN stops delivery to that client only
        await a.remove_listener(jobs, inbox_a)
        await sender.execute(f"NOTIFY {jobs}, 'seven'")
        await eventually(lambda: len(inbox_b.got) >= 6)
        await asyncio.sleep(0.2)
        assert inbox_a.got[-1] == (jobs, "six") and inbox_b.got[-1] == (jobs, "seven")
        assert door.stats().notifications_delivered >= 12
    finally:
        for conn in (a, b, c, sender, direct):
            await conn.close()
    await door.settled()


async def test_the_dedicated_connection_closes_with_the_last_listener(door: Door) -> None:
    chan = _chan("last")
    a, b, sender = [await door.connect() for _ in range(3)]
    inbox_b = _Inbox()
    try:
        await a.add_listener(chan, _Inbox())
        await b.add_listener(chan, inbox_b)
        assert door.stats().listen_connections == 1
        await a.close()  # a listener that leaves is dropped
        await eventually(lambda: door.stats().listeners == 1)
        await sender.execute(f"NOTIFY {chan}, 'after a left'")
        await eventually(lambda: inbox_b.got == [(chan, "after a left")])
        await b.close()
        await eventually(lambda: door.stats().listen_connections == 0)
        assert door.stats().listeners == 0 and door.stats().listen_channels == 0
        pool = door.pool()
        assert pool.in_use == 0  # it never was one of the pool's sessions
    finally:
        for conn in (a, b, sender):
            await conn.close()


async def test_listen_in_a_transaction_takes_effect_at_commit(door: Door) -> None:
    kept, dropped = _chan("kept"), _chan("dropped")
    conn = await door.connect()
    sender = await door.connect()
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(f"LISTEN {dropped}")
        assert door.stats().listeners == 0  # not before the transaction ends
        await tx.rollback()
        async with conn.transaction():
            await conn.execute(f"LISTEN {kept}")
            assert door.stats().listeners == 0
        assert door.stats().listeners == 1
        await sender.execute(f"NOTIFY {dropped}, 'no'")
        await sender.execute(f"NOTIFY {kept}, 'yes'")
        await eventually(lambda: door.stats().notifications_delivered == 1)
        # in a failed transaction it is refused as PostgreSQL refuses any statement
        with pytest.raises(asyncpg.InFailedSQLTransactionError):
            async with conn.transaction():
                with pytest.raises(asyncpg.DivisionByZeroError):
                    await conn.execute("SELECT 1/0")
                await conn.execute(f"LISTEN {dropped}")
        assert door.stats().listeners == 1
        await conn.execute("UNLISTEN *")
        assert door.stats().listeners == 0
        assert await conn.fetchval("SELECT 1") == 1
        await sender.execute(f"NOTIFY {dropped}, 'no'")
        await sender.execute(f"NOTIFY {kept}, 'no'")
        assert door.stats().notifications_delivered == 1
    finally:
        await conn.close()
        await sender.close()


async def test_psql_listen_receives_a_notification(door: Door) -> None:
    chan = _chan("psql")
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/psql", "-h", "127.0.0.1", "-p", str(door.port), "-U", "app",
        "-d", door.database, "-AtX",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PGPASSWORD": PASSWORD},
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"LISTEN {chan};\n".encode())
    await proc.stdin.drain()
    await eventually(lambda: door.stats().listeners == 1)
    sender = await door.connect()
    try:
        await sender.execute(f"NOTIFY {chan}, 'hello psql'")
    finally:
        await sender.close()
    # psql prints notifications after its next command
    await eventually(lambda: door.stats().notifications_delivered == 1)
    proc.stdin.write(b"SELECT 'done';\n\\q\n")
    await proc.stdin.drain()
    out = (await asyncio.wait_for(proc.stdout.read(), 10)).decode()
    await proc.wait()
    assert proc.returncode == 0, out
    assert f'Asynchronous notification "{chan}" with payload "hello psql" received' in out
    assert "done" in out


async def test_the_dedicated_connection_comes_back_after_it_died(door: Door) -> None:
    chan = _chan("back")
    conn, sender = await door.connect(), await door.connect()
    inbox = _Inbox()
    direct = await asyncpg.connect(host="127.0.0.1", user="postgres", database=door.database)
    try:
        await conn.add_listener(chan, inbox)
        # the dedicated session's last statement named our (unique) channel
        killed = await direct.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'fabric listen' AND query LIKE $1",
            f'%LISTEN "{chan}"%',
        )
        assert killed == 1
        front = door.service.postgres
        assert front is not None
        await eventually(lambda: front.listeners[door.database].connects == 2)
        await eventually(lambda: door.stats().listen_connections == 1)
        await sender.execute(f"NOTIFY {chan}, 'after the loss'")
        await eventually(lambda: inbox.got == [(chan, "after the loss")])
    finally:
        for c in (conn, sender, direct):
            await c.close()


async def _raw_client(port: int, database: str) -> tuple[asyncio.StreamReader, Any]:
    """A client speaking the protocol by hand, that reads only when told."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    params = b"user\0tool\0database\0" + database.encode() + b"\0\0"
    body = struct.pack("!i", 196608) + params
    writer.write(struct.pack("!i", len(body) + 4) + body)
    await _until_ready(reader)
    return reader, writer


async def _until_ready(reader: asyncio.StreamReader) -> bytes:
    seen = b""
    while True:
        head = await reader.readexactly(5)
        body = await reader.readexactly(struct.unpack("!i", head[1:])[0] - 4)
        seen += head + body
        if head[:1] == b"Z":
            return seen


async def test_a_client_that_does_not_read_its_notifications_is_disconnected() -> None:
    chan = _chan("slow")
    async with front_door(door_options={"max_notification_bytes": 256 * 1024}) as door:
        reader, writer = await _raw_client(door.port, door.database)
        query = f"LISTEN {chan}".encode() + b"\0"
        writer.write(b"Q" + struct.pack("!i", 4 + len(query)) + query)
        assert b"CLISTEN" in (await _until_ready(reader)).replace(b"\0\0\0\x0b", b"")
        sender = await door.connect()
        try:
            await sender.execute(
                "SELECT count(pg_notify($1, repeat('x', 7900) || g)) "
                "FROM generate_series(1, 3000) g",
                chan,
            )
            await eventually(lambda: door.stats().notification_overflows == 1)
            await eventually(lambda: door.stats().clients_connected == 1)
            rest = b""
            while chunk := await asyncio.wait_for(reader.read(1 << 20), 10):
                rest += chunk
            # what it was sent, then the reason it was disconnected
            assert rest.startswith(b"A") and b"C53400" in rest[-300:]
            await eventually(lambda: door.stats().listen_connections == 0)
        finally:
            writer.close()
            await sender.close()


async def test_front_door_listeners_show_in_the_metrics(door: Door) -> None:
    chan = _chan("metrics")
    conn, sender = await door.connect(), await door.connect()
    inbox = _Inbox()
    try:
        await conn.add_listener(chan, inbox)
        await sender.execute(f"NOTIFY {chan}, 'counted'")
        await eventually(lambda: len(inbox.got) == 1)
        families = {f["name"]: f for f in door.service.metrics()}

        def value(name: str, **labels: str) -> float:
            want = {"door": "postgres", **labels}
            (sample,) = [
                s for s in families[name]["samples"] if want.items() <= s["labels"].items()
            ]
            return float(sample["value"])

        assert value("dbpool_door_clients_connected") == 2
        assert value("dbpool_door_listeners") == 1
        assert value("dbpool_door_listen_connections") == 1
        assert value("dbpool_door_notifications_delivered") == 1
        assert families["dbpool_door_notifications_delivered"]["kind"] == "counter"
        assert value("dbpool_door_sent_bytes") > 0 and value("dbpool_door_leases") >= 1
        assert value("dbpool_door_pool_connections", database=door.database, state="idle") >= 1
    finally:
        await conn.close()
        await sender.close()
