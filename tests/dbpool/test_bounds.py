"""Memory bounds of the dbpool server, against the real PostgreSQL and MariaDB:
results are read in chunks and refused while they are read; a client that
does not read its replies stops being read."""

from __future__ import annotations

import asyncio

import pytest

from services.dbpool.client import DbPoolError, connect
from services.dbpool.protocol import Limits, Query, Rows
from services.dbpool.results import SMALL_REPLY

from .conftest import Env, eventually, make_env
from .test_server import Raw

HUGE = {
    "postgres": "SELECT generate_series(1, 20000000) AS n",
    "mysql": "SELECT seq AS n FROM seq_1_to_20000000",
}


def wide(kind: str, rows: int, width: int) -> str:
    if kind == "postgres":
        return f"SELECT repeat('x', {width}) AS s FROM generate_series(1, {rows})"
    return f"SELECT repeat('x', {width}) AS s FROM seq_1_to_{rows}"


async def test_a_huge_result_is_refused_by_rows_and_the_connection_stays_usable(kind: str) -> None:
    async with make_env(kind, limits=Limits(max_result_rows=100_000)) as env:
        client = await connect(env.port)
        with pytest.raises(DbPoolError) as info:
            await client.execute("main", HUGE[kind])
        assert info.value.code == "result_too_large"
        assert "100000 rows" in info.value.message
        assert (await client.execute("main", "SELECT 1 + 1")).scalar() == 2
        stats = env.service.statistics()
        # the 20 million rows were never held: at most the rows read before the refusal
        assert stats.reply_bytes_peak < 8 * 1024 * 1024
        assert stats.reply_bytes == 0
        assert stats.databases["main"].connections_closed == 0, "the lease was reused"
        # inside a transaction the statement is stopped and the transaction goes on
        async with client.transaction("main"):
            await client.execute("main", f"INSERT INTO {env.table} VALUES (1, 'kept')")
            with pytest.raises(DbPoolError) as info:
                await client.execute("main", HUGE[kind])
            assert info.value.code == "result_too_large"
        res = await client.execute("main", f"SELECT name FROM {env.table}")
        assert res.rows == [("kept",)]
        await client.close()


async def test_the_byte_limit_is_enforced_while_reading(kind: str) -> None:
    limit = 256 * 1024
    async with make_env(kind, limits=Limits(max_result_size=limit)) as env:
        client = await connect(env.port)
        with pytest.raises(DbPoolError) as info:
            await client.execute("main", wide(kind, 200_000, 100))  # ~20 MB
        assert info.value.code == "result_too_large"
        assert "max_result_size" in info.value.message
        assert env.service.statistics().reply_bytes_peak <= limit
        res = await client.execute("main", wide(kind, 1000, 100))  # ~100 KB: fits
        assert res.rowcount == 1000 and res.rows[0] == ("x" * 100,)
        await client.close()


async def test_default_limits_refuse_twenty_million_rows() -> None:
    async with make_env("postgres") as env:
        client = await connect(env.port)
        with pytest.raises(DbPoolError) as info:
            await client.execute("main", HUGE["postgres"])
        assert info.value.code == "result_too_large"
        assert await client.ping() >= 0
        await client.close()


async def pipeline_without_reading(env: Env, n: int, sql: str) -> Raw:
    raw = await Raw.open(env.port)
    await raw.hello()
    raw.send(*[Query(i, "main", sql) for i in range(1, n + 1)])
    return raw


async def test_a_client_that_never_reads_stops_being_read(kind: str) -> None:
    in_flight, result_limit, n = 8, 1024 * 1024, 300
    limits = Limits(max_in_flight=in_flight, max_result_size=result_limit)
    async with make_env(kind, limits=limits) as env:
        sql = wide(kind, 500, 1000)  # ~500 KB per reply, ~150 MB for all of them
        raw = await pipeline_without_reading(env, n, sql)
        server = env.service.server
        assert server is not None

        def stalled() -> bool:
            (s,) = server.session_statistics()
            return s.requests_in_flight == in_flight

        await eventually(stalled)
        await asyncio.sleep(0.5)  # give the server every chance to read on
        (session,) = server.session_statistics()
        # one large result, and for each other request at most SMALL_REPLY
        bound = result_limit + in_flight * SMALL_REPLY
        assert session.requests_read < n, "the server stopped reading requests"
        assert session.requests_in_flight <= in_flight
        assert session.reply_bytes_peak <= bound
        assert session.bytes_buffered_in <= 65536 + 4096
        # a reader at last: every request is answered, in full
        replies = await raw.responses(n)
        assert all(isinstance(r, Rows) and r.rowcount == 500 for r in replies.values())
        (session,) = server.session_statistics()
        assert session.reply_bytes == 0 and session.requests_read == n
        assert session.reply_bytes_peak <= bound
        await raw.close()


async def test_pipelined_large_rows_run_a_few_at_a_time(kind: str) -> None:
    # A single row is read whole before the reply accounting can hold it back:
    # max_parallel bounds how many such rows a client that never reads can pin.
    in_flight, parallel, width, n = 16, 2, 400_000, 40
    limits = Limits(max_in_flight=in_flight, max_parallel=parallel, max_result_size=1 << 20)
    async with make_env(kind, limits=limits) as env:
        raw = await pipeline_without_reading(env, n, wide(kind, 1, width))
        server = env.service.server
        assert server is not None
        await eventually(lambda: server.session_statistics()[0].requests_in_flight == in_flight)
        await asyncio.sleep(0.5)  # give the server every chance to run more
        (session,) = server.session_statistics()
        bound = parallel * (width + 4096) + in_flight * SMALL_REPLY
        assert session.reply_bytes_peak <= bound  # 16 rows at once would be ~6.4 MB
        assert env.in_use() <= parallel
        replies = await raw.responses(n)  # a reader at last: all answered, in full
        assert all(isinstance(r, Rows) and len(r.rows[0][0]) == width for r in replies.values())
        await raw.close()


async def test_a_stalled_reader_is_closed_and_its_leases_return(kind: str) -> None:
    limits = Limits(max_in_flight=8, max_result_size=1024 * 1024, write_timeout=1.0)
    async with make_env(kind, limits=limits, max_size=4) as env:
        raw = await pipeline_without_reading(env, 300, wide(kind, 500, 1000))
        server = env.service.server
        assert server is not None
        # while it stalls, its waiting requests hold leases; then it is given up on
        await eventually(lambda: env.in_use() > 0)
        await eventually(lambda: not server.session_statistics())
        stats = env.service.statistics()
        assert stats.errors.get("write_timeout") == 1
        await eventually(lambda: env.in_use() == 0)
        # the pool serves others again
        client = await connect(env.port)
        assert (await client.execute("main", "SELECT 1")).scalar() == 1
        await client.close()
        await raw.close()
