"""The asyncio client against the server, on PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import uuid

import pytest

from services.dbpool.client import DbPoolClient, DbPoolError, connect

from .conftest import Env, make_env


async def count(c: DbPoolClient, env: Env) -> int:
    res = await c.execute("main", f"SELECT count(*) FROM {env.table}")
    return int(res.scalar())


async def test_query_with_params(env: Env) -> None:
    async with await connect(env.port) as c:
        res = await c.execute("main", f"SELECT {env.ph(1)} + 1 AS n, {env.ph(2)} AS s", (41, "hé"))
        assert res.columns == ["n", "s"]
        assert res.rows == [(42, "hé")]
        ins = await c.execute(
            "main", f"INSERT INTO {env.table} VALUES ({env.ph(1)}, {env.ph(2)})", (1, None)
        )
        assert (ins.columns, ins.rows, ins.rowcount) == ([], [], 1)
        res = await c.execute("main", f"SELECT id, name FROM {env.table}")
        assert res.rows == [(1, None)]


async def test_execute_many(env: Env) -> None:
    async with await connect(env.port) as c:
        n = await c.executemany(
            "main",
            f"INSERT INTO {env.table} VALUES ({env.ph(1)}, {env.ph(2)})",
            [(i, f"row {i}") for i in range(5)],
        )
        assert n == 5
        assert await count(c, env) == 5


async def test_transaction_spanning_several_requests_commits(env: Env) -> None:
    async with await connect(env.port) as c, await connect(env.port) as other:
        async with c.transaction("main"):
            await c.execute("main", f"INSERT INTO {env.table} VALUES (1, 'a')")
            await c.executemany(
                "main", f"INSERT INTO {env.table} VALUES ({env.ph(1)}, 'b')", [(2,), (3,)]
            )
            assert await count(c, env) == 3  # the transaction sees its own rows
            assert await count(other, env) == 0  # nobody else does yet
            assert (await c.stats()).transactions_open == 1
        assert await count(other, env) == 3
        await env.service.settled()
        assert env.in_use() == 0


async def test_rollback_on_exception(env: Env) -> None:
    async with await connect(env.port) as c:
        with pytest.raises(RuntimeError):
            async with c.transaction("main"):
                await c.execute("main", f"INSERT INTO {env.table} VALUES (1, 'a')")
                raise RuntimeError("boom")
        assert c.in_transaction is None
        assert await count(c, env) == 0


async def test_database_errors_carry_sqlstate(env: Env) -> None:
    async with await connect(env.port) as c:
        with pytest.raises(DbPoolError) as info:
            await c.execute("main", "SELEC 1")
        assert info.value.code == "database_error"
        assert info.value.sqlstate == ("42601" if env.kind == "postgres" else "42000")
        with pytest.raises(DbPoolError) as info:
            await c.execute("main", "SELECT * FROM no_such_table_dbpool")
        assert info.value.sqlstate == ("42P01" if env.kind == "postgres" else "42S02")
        if env.kind == "mysql":
            assert info.value.db_code == "1146"
        assert "no_such_table_dbpool" in info.value.message
        assert await c.ping() >= 0  # the connection survives database errors


async def test_pipelined_requests_from_many_tasks_share_one_connection(env: Env) -> None:
    async with await connect(env.port) as c:
        results = await asyncio.gather(
            *(c.execute("main", f"SELECT {env.ph(1)} + 0 AS n", (i,)) for i in range(40))
        )
        assert [r.scalar() for r in results] == list(range(40))


async def test_a_failed_begin_leaves_no_transaction_behind(env: Env) -> None:
    async with await connect(env.port) as c:
        with pytest.raises(DbPoolError) as info:
            await c.begin("nope")
        assert info.value.code == "unknown_database"
        assert c.in_transaction is None
        await c.execute("main", f"INSERT INTO {env.table} VALUES (1, 'a')")  # autocommit
        with pytest.raises(DbPoolError, match="no_transaction"):
            await c.commit()
        await c.begin("main")
        with pytest.raises(DbPoolError, match="already_in_transaction"):
            await c.begin("main")
        await c.rollback()
        assert await count(c, env) == 1


async def test_other_databases_run_outside_the_transaction(env: Env) -> None:
    async with await connect(env.port) as c:
        async with c.transaction("main"):
            await c.execute("main", f"INSERT INTO {env.table} VALUES (1, 'a')")
            # "other" is the same server through another pool: a separate connection
            res = await c.execute("other", f"SELECT count(*) FROM {env.table}")
            assert res.scalar() == 0
        s = await c.stats()
        assert s.databases["other"].leases_served >= 1


async def test_typed_values_round_trip_through_postgres(pg_env: Env) -> None:
    u = uuid.uuid4()
    day = datetime.date(2024, 2, 29)
    ts = datetime.datetime(2024, 2, 29, 12, 30, 1, 5, tzinfo=datetime.UTC)
    async with await connect(pg_env.port) as c:
        res = await c.execute(
            "main",
            "SELECT $1::numeric AS d, $2::date AS day, $3::timestamptz AS ts, $4::uuid AS u,"
            " $5::interval AS iv, $6::bytea AS b, '{\"k\": 1}'::jsonb AS j, $7::int[] AS a,"
            " $8::timestamp AS naive, '10.0.0.1'::inet AS ip",
            (
                decimal.Decimal("12.50"),
                day,
                ts,
                u,
                datetime.timedelta(days=2, seconds=3),
                b"\x00\xff",
                [1, 2],
                datetime.datetime(2024, 1, 1, 8),
            ),
        )
    (row,) = res.rows
    assert row == (
        decimal.Decimal("12.50"),
        day,
        ts,
        u,
        datetime.timedelta(days=2, seconds=3),
        b"\x00\xff",
        '{"k": 1}',
        [1, 2],
        datetime.datetime(2024, 1, 1, 8),
        "10.0.0.1",
    )


async def test_connect_to_a_closed_port_is_a_dbpool_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(DbPoolError) as info:
        await connect(port, timeout=5)
    assert info.value.code == "disconnected"


async def test_fifty_clients_share_a_pool_of_five(kind: str) -> None:
    async with make_env(kind, min_size=0, max_size=5) as env:

        async def one(i: int) -> int:
            async with await connect(env.port) as c:
                async with c.transaction("main"):
                    await c.execute(
                        "main", f"INSERT INTO {env.table} VALUES ({env.ph(1)}, 'c')", (i,)
                    )
                return int((await c.execute("main", f"SELECT {env.ph(1)} + 0", (i,))).scalar())

        assert await asyncio.gather(*(one(i) for i in range(50))) == list(range(50))
        await env.settled()
        stats = env.service.statistics()
        db = stats.databases["main"]
        assert db.size <= 5 and db.in_use == 0
        assert stats.requests == {"begin": 50, "query": 100, "commit": 50}
        async with await connect(env.port) as c:
            assert await count(c, env) == 50


async def test_a_client_killed_mid_transaction_is_rolled_back(env: Env) -> None:
    c = await connect(env.port)
    await c.begin("main")
    await c.execute("main", f"INSERT INTO {env.table} VALUES (1, 'ghost')")
    c._writer.transport.abort()  # type: ignore[attr-defined]
    await c.close()
    await env.settled()
    stats = env.service.statistics()
    assert (stats.transactions_abandoned, stats.transactions_open) == (1, 0)
    async with await connect(env.port) as other:
        assert await count(other, env) == 0
