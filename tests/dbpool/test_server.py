"""Server behaviour seen from the raw protocol: limits, bad peers, leases, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

import msgspec
import pytest

from services.dbpool.client import DbPoolError, connect
from services.dbpool.protocol import (
    NEED_DATA,
    Begin,
    ClientConnection,
    Commit,
    Done,
    Error,
    HandshakeRejected,
    Limits,
    Ping,
    Pong,
    Query,
    Request,
    Response,
    Rollback,
    Rows,
    ServerHello,
)
from services.dbpool.service import DbPoolConfig, DbPoolService

from .conftest import Env, db_config, eventually, make_env

GUARD = 20.0  # seconds; only to turn a hang into a failure


class Raw:
    """A hand-driven client: real TCP, the sans-IO client connection, no conveniences."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = ClientConnection()

    @classmethod
    async def open(cls, port: int, *, version: int = 1) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = cls(reader, writer)
        raw.conn = ClientConnection(version=version)
        writer.write(raw.conn.hello())
        return raw

    async def hello(self) -> ServerHello:
        ev = await self.recv()
        assert isinstance(ev, ServerHello)
        return ev

    def send(self, *msgs: Request) -> None:
        self.writer.write(b"".join(self.conn.send(m) for m in msgs))

    async def recv(self) -> Any:
        async with asyncio.timeout(GUARD):
            while (ev := self.conn.next_event()) is NEED_DATA:
                self.conn.receive_data(await self.reader.read(65536))
        return ev

    async def responses(self, n: int) -> dict[int, Response]:
        out = {}
        for _ in range(n):
            ev = await self.recv()
            out[ev.id] = ev
        return out

    async def eof(self) -> bool:
        async with asyncio.timeout(GUARD):
            return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def test_malformed_frame_gets_an_error_and_a_close_and_others_carry_on(env: Env) -> None:
    good = await Raw.open(env.port)
    bad = await Raw.open(env.port)
    await good.hello()
    await bad.hello()
    good.send(Begin(1, "main"), Query(2, "main", f"INSERT INTO {env.table} VALUES (1, 'x')"))
    assert await good.responses(2) == {1: Done(1), 2: Rows(2, [], [], 1)}
    body = msgspec.msgpack.encode({"t": "query", "id": 3, "db": "main"})  # no sql
    bad.writer.write(struct.pack(">I", len(body)) + body)
    ev = await bad.recv()
    assert isinstance(ev, Error) and (ev.id, ev.code) == (0, "protocol_error")
    assert await bad.eof()
    await bad.close()
    good.send(Commit(3), Query(4, "main", f"SELECT count(*) FROM {env.table}"))
    got = await good.responses(2)
    assert got[3] == Done(3)
    assert isinstance(got[4], Rows) and got[4].rows == [(1,)]
    await good.close()
    await env.settled()
    assert env.service.statistics().errors == {"protocol_error": 1}


async def test_oversized_frame_is_refused_before_its_body_arrives(env: Env) -> None:
    raw = await Raw.open(env.port)
    hello = await raw.hello()
    raw.writer.write(struct.pack(">I", hello.max_frame_size + 1))
    ev = await raw.recv()
    assert isinstance(ev, Error) and ev.code == "frame_too_large"
    assert await raw.eof()
    await raw.close()


async def test_garbage_and_wrong_versions_at_the_door(env: Env) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    async with asyncio.timeout(GUARD):
        assert await reader.read() == b""  # not our protocol: closed without a word
    writer.close()

    raw = await Raw.open(env.port, version=7)
    with pytest.raises(HandshakeRejected) as info:
        await raw.recv()
    assert (info.value.code, info.value.server_version) == ("unsupported_version", 1)
    await raw.close()
    await env.settled()
    stats = env.service.statistics()
    assert stats.clients_rejected == 1
    assert stats.errors == {"bad_magic": 1, "unsupported_version": 1}


async def test_a_hello_sent_too_slowly_is_closed_within_one_handshake_limit() -> None:
    # One byte of the hello at a time, each well within the limit: the limit is
    # for the whole hello, so the server closes before the hello is complete.
    async with make_env("postgres", limits=Limits(handshake_timeout=0.5)) as env:
        reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
        closed = asyncio.ensure_future(reader.read())  # done at the server's close
        hello = ClientConnection().hello()
        sent = 0
        async with asyncio.timeout(GUARD):
            while sent < len(hello) - 1 and not closed.done():
                writer.write(hello[sent : sent + 1])
                sent += 1
                await asyncio.sleep(0.2)
            assert await closed == b""
        assert sent < len(hello) - 1
        writer.close()
        await env.settled()
        stats = env.service.statistics()
        assert stats.errors == {"handshake_timeout": 1}
        assert stats.clients_total == 0


async def test_max_clients_refuses_the_extra_client(kind: str) -> None:
    async with make_env(kind, limits=Limits(max_clients=1)) as env:
        first = await connect(env.port)
        with pytest.raises(DbPoolError) as info:
            await connect(env.port)
        assert info.value.code == "too_many_clients"
        await first.close()
        await env.settled()
        second = await connect(env.port)  # room again
        assert await second.ping() >= 0
        await second.close()


async def test_in_flight_limit_bounds_concurrency_per_client() -> None:
    async with make_env("postgres", limits=Limits(max_in_flight=2)) as env:
        raw = await Raw.open(env.port)
        assert (await raw.hello()).max_in_flight == 2
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, env.in_use())
                await asyncio.sleep(0.002)

        watcher = asyncio.ensure_future(watch())
        raw.send(*(Query(i, "main", "SELECT pg_sleep(0.05)") for i in range(1, 9)))
        got = await raw.responses(8)
        watcher.cancel()
        assert sorted(got) == list(range(1, 9))
        assert all(isinstance(r, Rows) for r in got.values())
        assert 1 <= peak <= 2
        await raw.close()


async def test_idle_client_is_closed_and_its_transaction_rolled_back(kind: str) -> None:
    async with make_env(kind, limits=Limits(idle_timeout=0.3)) as env:
        raw = await Raw.open(env.port)
        await raw.hello()
        raw.send(Begin(1, "main"), Query(2, "main", f"INSERT INTO {env.table} VALUES (1, 'x')"))
        await raw.responses(2)
        ev = await raw.recv()  # then silence from us
        assert isinstance(ev, Error) and (ev.id, ev.code) == (0, "idle_timeout")
        assert await raw.eof()
        await raw.close()
        await env.settled()
        stats = env.service.statistics()
        assert stats.transactions_abandoned == 1
        async with await connect(env.port) as c:
            assert (await c.execute("main", f"SELECT count(*) FROM {env.table}")).scalar() == 0


async def test_acquire_timeout_comes_back_as_an_error(kind: str) -> None:
    async with make_env(kind, max_size=1, acquire_timeout=0.2) as env:
        holder = await connect(env.port)
        await holder.begin("main")  # pins the only connection
        async with await connect(env.port) as c:
            with pytest.raises(DbPoolError) as info:
                await c.execute("main", "SELECT 1")
            assert info.value.code == "acquire_timeout"
            assert await c.ping() >= 0
        await holder.commit()
        await holder.close()
        stats = env.service.statistics()
        assert stats.databases["main"].timeouts == 1
        assert stats.errors == {"acquire_timeout": 1}


async def test_a_failed_begin_keeps_pipelined_requests_out_of_autocommit(kind: str) -> None:
    async with make_env(kind, max_size=1, acquire_timeout=0.2) as env:
        holder = await connect(env.port)
        await holder.begin("main")
        raw = await Raw.open(env.port)
        await raw.hello()
        raw.send(
            Begin(1, "main"),
            Query(2, "main", f"INSERT INTO {env.table} VALUES (1, 'x')"),
            Commit(3),
            Rollback(4),
        )
        got = await raw.responses(4)
        assert [type(r).__name__ for r in got.values()] == ["Error", "Error", "Error", "Error"]
        assert got[1].code == "acquire_timeout"  # type: ignore[union-attr]
        assert got[2].code == "transaction_aborted"  # type: ignore[union-attr]
        assert got[3].code == "transaction_aborted"  # type: ignore[union-attr]
        assert got[4].code == "no_transaction"  # type: ignore[union-attr]
        await raw.close()
        res = await holder.execute("main", f"SELECT count(*) FROM {env.table}")
        assert res.scalar() == 0
        await holder.rollback()
        await holder.close()


async def test_pipelined_transaction_runs_in_order(env: Env) -> None:
    raw = await Raw.open(env.port)
    # Everything in one write, before the server hello has even arrived.
    raw.send(
        Begin(1, "main"),
        Query(2, "main", f"INSERT INTO {env.table} VALUES (1, 'a')"),
        Query(3, "main", f"UPDATE {env.table} SET name = 'b' WHERE id = 1"),
        Query(4, "main", f"SELECT name FROM {env.table}"),
        Rollback(5),
        Query(6, "main", f"SELECT count(*) FROM {env.table}"),
        Ping(7),
    )
    await raw.hello()
    got = await raw.responses(7)
    assert got[1] == Done(1)
    assert got[4] == Rows(4, ["name"], [("b",)], 1)
    assert got[5] == Done(5)
    assert isinstance(got[6], Rows) and got[6].rows == [(0,)]
    assert got[7] == Pong(7)
    await raw.close()


async def test_client_gone_mid_query_gets_its_lease_discarded(pg_env: Env) -> None:
    raw = await Raw.open(pg_env.port)
    await raw.hello()
    raw.send(Query(1, "main", "SELECT pg_sleep(30)"))
    await eventually(lambda: pg_env.in_use() == 1)
    closed_before = pg_env.service.statistics().databases["main"].connections_closed
    raw.writer.transport.abort()
    await pg_env.settled()  # well before the 30 s statement ends
    db = pg_env.service.statistics().databases["main"]
    assert db.connections_closed == closed_before + 1


async def test_lost_connection_in_a_transaction(pg_env: Env) -> None:
    async with await connect(pg_env.port) as c:
        await c.begin("main")
        pid = (await c.execute("main", "SELECT pg_backend_pid()")).scalar()
        await c.execute("other", "SELECT pg_terminate_backend($1)", (pid,))
        with pytest.raises(DbPoolError) as info:
            await c.execute("main", "SELECT 1")
        assert info.value.code == "connection_lost"
        with pytest.raises(DbPoolError) as info:
            await c.execute("main", "SELECT 1")
        assert info.value.code == "transaction_aborted"
        await c.rollback()
        await pg_env.service.settled()
        assert pg_env.in_use() == 0
        assert (await c.execute("main", "SELECT 1")).scalar() == 1


async def test_result_too_large_is_refused_per_request() -> None:
    async with make_env("postgres", limits=Limits(max_result_size=4096)) as env:
        async with await connect(env.port) as c:
            with pytest.raises(DbPoolError) as info:
                await c.execute("main", "SELECT repeat('x', 10000)")
            assert info.value.code == "result_too_large"
            assert (await c.execute("main", "SELECT 1")).scalar() == 1


async def test_shutdown_tells_clients_and_rolls_back(env: Env) -> None:
    c = await connect(env.port)
    await c.begin("main")
    await c.execute("main", f"INSERT INTO {env.table} VALUES (1, 'x')")
    server = env.service.server
    assert server is not None
    await server.close()
    with pytest.raises(DbPoolError) as info:
        await c.ping()
    assert info.value.code == "server_closing"
    await c.close()
    with pytest.raises(DbPoolError) as info:
        await connect(env.port)
    assert info.value.code == "server_closing"
    assert env.in_use() == 0
    pool = env.service.pools["main"]
    async with pool.lease() as lease:
        assert (await lease.query(f"SELECT count(*) FROM {env.table}")).rows[0][0] == 0


def test_the_server_under_plain_asyncio_in_debug_mode() -> None:
    # The suite's loop is uvloop (tests/conftest.py); this covers the stdlib loop.
    async def scenario() -> None:
        async with make_env("postgres") as env, await connect(env.port) as c:
            async with c.transaction("main"):
                await c.execute("main", f"INSERT INTO {env.table} VALUES (1, 'u')")
            res = await asyncio.gather(*(c.execute("main", "SELECT 1") for _ in range(20)))
            assert {r.scalar() for r in res} == {1}

    asyncio.run(scenario(), debug=True)


async def test_the_service_on_the_virtual_network(pg_env: Env) -> None:
    from fabric.net import VirtualNetwork

    net = VirtualNetwork("dbpool-test")
    config = DbPoolConfig(port=7432, databases={"main": db_config("postgres", max_size=2)})
    async with DbPoolService(config, start_server=net.start_server) as service:
        assert service.port == 7432
        assert net.is_listening(7432)

        async def client(i: int) -> int:
            async with await connect(7432, open_connection=net.open_connection) as c:
                async with c.transaction("main"):
                    await c.execute("main", f"INSERT INTO {pg_env.table} VALUES ($1, 'v')", (i,))
                return int((await c.execute("main", "SELECT $1::int", (i,))).scalar())

        assert await asyncio.gather(*(client(i) for i in range(10))) == list(range(10))
        await eventually(lambda: service.statistics().clients_connected == 0)
        await service.settled()  # the last replies may come before their leases are back
        stats = service.statistics()
        assert stats.clients_total == 10
        assert stats.databases["main"].in_use == 0
    res = await pg_env.service.pools["main"].acquire()
    try:
        assert (await res.query(f"SELECT count(*) FROM {pg_env.table}")).rows == [(10,)]
    finally:
        await pg_env.service.pools["main"].release(res)


async def test_a_session_setting_never_reaches_the_next_client(kind: str) -> None:
    # Default limits and pool settings: replies do not wait for the reset, and
    # every autocommit lease is still reset before its connection is lent
    # again. One pooled connection, so each request runs on the connection
    # the previous one changed.
    set_sql, show_sql, fresh = {
        "postgres": ("SET search_path = pg_catalog", "SHOW search_path", '"$user", public'),
        "mysql": ("SET @fabric_marker = 5", "SELECT @fabric_marker", None),
    }[kind]
    assert Limits().reply_before_release
    async with make_env(kind, min_size=1, max_size=1) as env:
        async with await connect(env.port) as c, await connect(env.port) as other:
            for _ in range(3):
                await c.execute("main", set_sql)
                assert (await other.execute("main", show_sql)).scalar() == fresh
                assert (await c.execute("main", show_sql)).scalar() == fresh
            rows = await asyncio.gather(*(c.execute("main", f"SELECT {i}") for i in range(10)))
            assert [r.scalar() for r in rows] == list(range(10))
        session = env.service.open_session()
        try:
            await session.query("main", set_sql)
            assert (await session.query("main", show_sql)).rows == [(fresh,)]
        finally:
            await session.aclose()
        await env.settled()  # every lease came back
        stats = env.service.statistics().databases["main"]
        assert stats.connections_opened == 1 and stats.leases_served == 21


async def test_a_reply_comes_before_the_release_settles(kind: str) -> None:
    # The lease is given back after the reply is written; settled() waits for
    # it, and the client's next request waits for it too (one connection).
    async with make_env(kind, min_size=1, max_size=1) as env:
        async with await connect(env.port) as c:
            for i in range(5):
                assert (await c.execute("main", f"SELECT {i}")).scalar() == i
                await env.service.settled()
                assert env.in_use() == 0
        session = env.service.open_session()
        try:
            for i in range(5):
                assert (await session.query("main", f"SELECT {i}")).rows == [(i,)]
            await env.service.settled()
            assert env.in_use() == 0
        finally:
            await session.aclose()
