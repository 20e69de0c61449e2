"""Results read in chunks: `Lease.stream` and `Lease.query_limited`, against the real
PostgreSQL and MariaDB, on asyncio and on uvloop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from pools import PoolError, ResultTooLarge, create_pool

if TYPE_CHECKING:
    from .conftest import Target


def series(target: Target, n: int) -> str:
    if target.kind == "postgres":
        return f"SELECT g AS n, 'row ' || g AS label FROM generate_series(1, {n}) AS g"
    return f"SELECT seq AS n, CONCAT('row ', seq) AS label FROM seq_1_to_{n}"


async def test_stream_hands_over_every_row_in_chunks_of_the_asked_size(target: Target) -> None:
    pool = target.track(create_pool(target.config()))
    chunks: list[int] = []
    seen: list[tuple[Any, ...]] = []

    async def sink(columns: list[str], rows: list[tuple[Any, ...]]) -> int:
        assert columns == ["n", "label"]
        chunks.append(len(rows))
        seen.extend(rows)
        return 300

    async with pool.lease() as lease:
        res = await lease.stream(series(target, 1000), (), sink, chunk_rows=100)
        assert (res.columns, res.rowcount) == (["n", "label"], 1000)
        assert [r[0] for r in seen] == list(range(1, 1001))
        assert seen[-1] == (1000, "row 1000")
        assert max(chunks) <= 300 and chunks[0] == 100
        assert not lease.in_transaction, "the statement's own transaction was committed"


async def test_stream_of_a_statement_without_rows_reports_the_rowcount(target: Target) -> None:
    pool = target.track(create_pool(target.config()))
    table = target.table()

    async def sink(columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        raise AssertionError("no rows expected")

    async with pool.lease() as lease:
        await lease.query(f"CREATE TEMPORARY TABLE {table} (id int)")
        res = await lease.stream(f"INSERT INTO {table} VALUES (1), (2), (3)", (), sink)
        assert (res.columns, res.rowcount) == ([], 3)


async def test_a_huge_result_is_refused_and_the_lease_stays_usable(target: Target) -> None:
    pool = target.track(create_pool(target.config()))
    async with pool.lease() as lease:
        with pytest.raises(ResultTooLarge) as info:
            await lease.query_limited(series(target, 20_000_000), max_rows=5000)
        assert info.value.rows <= 5000 + 4096  # refused within one chunk of the limit
        assert lease.usable and not lease.in_transaction
        assert (await lease.query("SELECT 1")).rows == [(1,)]
        # inside a transaction: the statement stops, the transaction goes on
        table = target.table()
        await lease.query(f"CREATE TEMPORARY TABLE {table} (id int)")
        await lease.begin()
        await lease.query(f"INSERT INTO {table} VALUES (7)")
        with pytest.raises(ResultTooLarge):
            await lease.query_limited(series(target, 20_000_000), max_rows=10)
        assert lease.in_transaction
        await lease.commit()
        assert (await lease.query(f"SELECT id FROM {table}")).rows == [(7,)]
    stats = pool.statistics()
    assert stats.connections_closed == 0, "the connection was reused, not discarded"


async def test_a_sink_error_that_is_not_a_pool_error_breaks_the_lease(target: Target) -> None:
    pool = target.track(create_pool(target.config()))

    async def sink(columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        raise RuntimeError("sink failed")

    async with pool.lease() as lease:
        with pytest.raises(RuntimeError):
            await lease.stream(series(target, 10), (), sink)
        assert not lease.usable


async def test_stream_validates_its_chunk_size(target: Target) -> None:
    pool = target.track(create_pool(target.config()))

    async def sink(columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        return None

    async with pool.lease() as lease:
        with pytest.raises(ValueError):
            await lease.stream("SELECT 1", (), sink, chunk_rows=0)
        with pytest.raises(PoolError):
            await lease.query_limited("SELECT * FROM no_such_table_here", max_rows=1)
