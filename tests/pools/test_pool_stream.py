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


async def test_a_bounded_read_outside_a_transaction_refuses_past_its_limits(
    target: Target,
) -> None:
    # PostgreSQL reads it in one round trip (a row limit of max_rows + 1),
    # MariaDB unbuffered: both refuse, and the lease goes on.
    pool = target.track(create_pool(target.config()))
    async with pool.lease() as lease:
        with pytest.raises(ResultTooLarge) as info:
            await lease.query_limited(series(target, 100), max_rows=99)
        assert info.value.rows == 100
        with pytest.raises(ResultTooLarge) as info:
            await lease.query_limited(series(target, 100), max_rows=1000, max_bytes=500)
        assert info.value.size > 500
        res = await lease.query_limited(series(target, 100), max_rows=100)
        assert (len(res.rows), res.rowcount, res.rows[-1]) == (100, 100, (100, "row 100"))
        empty = await lease.query_limited(series(target, 0) + " LIMIT 0", max_rows=1)
        assert (empty.columns, empty.rows, empty.rowcount) == (["n", "label"], [], 0)
        assert lease.usable and not lease.in_transaction
    assert pool.statistics().connections_closed == 0


def wide(target: Target, n: int, width: int) -> str:
    if target.kind == "postgres":
        return f"SELECT g AS n, repeat('x', {width}) AS pad FROM generate_series(1, {n}) AS g"
    return f"SELECT seq AS n, REPEAT('x', {width}) AS pad FROM seq_1_to_{n}"


async def test_a_result_too_big_for_one_round_trip_is_read_whole(target: Target) -> None:
    # 8 MiB: past what PostgreSQL reads in one round trip; the statement is
    # cancelled and read again through a cursor.
    pool = target.track(create_pool(target.config()))
    async with pool.lease() as lease:
        res = await lease.query_limited(wide(target, 1024, 8192), max_rows=10_000)
        assert [r[0] for r in res.rows] == list(range(1, 1025))
        assert all(len(r[1]) == 8192 for r in res.rows)
        if target.kind == "postgres":
            assert lease._conn.read_guard.tripped  # type: ignore[attr-defined]
        assert lease.usable and not lease.in_transaction
        assert (await lease.query("SELECT 1 AS one")).rows == [(1,)]
    assert pool.statistics().connections_closed == 0


@pytest.mark.parametrize("target", ["postgres"], indirect=True)
async def test_a_statement_read_again_after_a_cancel_ran_once(target: Target) -> None:
    # INSERT ... RETURNING with a result past the one-round-trip budget: the
    # first run is cancelled and rolled back (or had finished and is kept);
    # either way the rows are inserted exactly once. Only PostgreSQL reads in
    # one round trip with a cancel to fall back on; MariaDB reads unbuffered.
    pool = target.track(create_pool(target.config()))
    table = target.table()
    async with pool.lease() as lease:
        await lease.query(f"CREATE TABLE {table} (id int primary key, pad text)")
        try:
            res = await lease.query_limited(
                f"INSERT INTO {table} SELECT g, repeat('y', 8192) "
                f"FROM generate_series(1, 1024) AS g RETURNING id, pad",
                max_rows=10_000,
            )
            assert sorted(r[0] for r in res.rows) == list(range(1, 1025))
            assert lease._conn.read_guard.tripped  # type: ignore[attr-defined]
            count = await lease.query(f"SELECT count(*) FROM {table}")
            assert count.rows == [(1024,)]
        finally:
            await lease.query(f"DROP TABLE {table}")


async def test_a_cancel_sent_for_size_never_reaches_the_next_statement(target: Target) -> None:
    # Results just past the one-round-trip budget: some finish before the
    # cancel lands, some are cancelled and read again. The statements after
    # them run undisturbed.
    pool = target.track(create_pool(target.config()))
    async with pool.lease() as lease:
        for _ in range(5):
            res = await lease.query_limited(wide(target, 3000, 100), max_rows=10_000)
            assert len(res.rows) == 3000
            slow = await lease.query(target.sleep_sql(0.05))
            assert len(slow.rows) == 1
        assert lease.usable and not lease.in_transaction
    assert pool.statistics().connections_closed == 0
