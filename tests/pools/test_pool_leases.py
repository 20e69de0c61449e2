"""What a lease holder sees: queries, transactions, errors, and a clean session each time.

Every test runs against real PostgreSQL and real MariaDB, on asyncio and on uvloop.
"""

from __future__ import annotations

import datetime
import decimal
from typing import TYPE_CHECKING

import pytest

from pools import (
    DatabaseConfig,
    DatabaseError,
    LeaseReleased,
    PoolError,
    QueryResult,
    create_pool,
)

if TYPE_CHECKING:
    from pools import Lease

    from .conftest import Target


def in_tx(lease: Lease) -> bool:
    """Read the property afresh (keeps type checkers from narrowing it across awaits)."""
    return lease.in_transaction


async def test_query_with_params_returns_columns_native_rows_and_rowcount(target: Target) -> None:
    pool = target.track(create_pool(target.config()))
    p1, p2, p3 = target.ph(1), target.ph(2), target.ph(3)
    async with pool.lease() as lease:
        cast = "::numeric" if target.kind == "postgres" else ""
        result = await lease.query(
            f"SELECT {p1}{'::int' if target.kind == 'postgres' else ''} AS n, "
            f"{p2}{'::text' if target.kind == 'postgres' else ''} AS word, "
            f"{p3}{cast} AS amount, CAST('2024-05-06' AS DATE) AS day",
            [41, "o'hara", decimal.Decimal("2.50")],
        )
        assert result == QueryResult(
            columns=["n", "word", "amount", "day"],
            rows=[(41, "o'hara", decimal.Decimal("2.50"), datetime.date(2024, 5, 6))],
            rowcount=1,
        )
        empty = await lease.query("SELECT 1 AS a, 2 AS b WHERE 1 = 0")
        assert empty == QueryResult(columns=["a", "b"], rows=[], rowcount=0)


async def test_bytes_parameters_round_trip(target: Target) -> None:
    pool = target.track(create_pool(target.config()))
    p1, p2 = target.ph(1), target.ph(2)
    cast = "::bytea" if target.kind == "postgres" else ""
    data = bytes(range(256)) + b"'\\"
    async with pool.lease() as lease:
        result = await lease.query(f"SELECT {p1}{cast} AS a, {p2}{cast} AS b", [data, b""])
        assert result.rows == [(data, b"")]


async def test_execute_many_and_affected_row_counts(target: Target) -> None:
    pool = target.track(create_pool(target.config()))
    table = target.table()
    p1, p2 = target.ph(1), target.ph(2)
    async with pool.lease() as lease:
        await lease.query(f"CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(20))")
        try:
            n = await lease.execute_many(
                f"INSERT INTO {table} (id, name) VALUES ({p1}, {p2})",
                [(i, f"n{i}") for i in range(10)],
            )
            assert n == 10
            assert (
                await lease.execute_many(
                    f"UPDATE {table} SET name = 'x' WHERE id < {p1}", [(3,), (5,)]
                )
                == 3 + 5
            )
            assert await lease.execute_many(f"DELETE FROM {table} WHERE id = {p1}", []) == 0
            updated = await lease.query(f"UPDATE {table} SET name = 'y' WHERE id >= {p1}", [7])
            assert (updated.columns, updated.rows, updated.rowcount) == ([], [], 3)
            rows = await lease.query(f"SELECT id, name FROM {table} ORDER BY id")
            assert rows.rowcount == 10 and rows.rows[0] == (0, "x") and rows.rows[9] == (9, "y")
        finally:
            await lease.query(f"DROP TABLE {table}")


async def test_execute_many_outside_a_transaction_is_atomic(target: Target) -> None:
    pool = target.track(create_pool(target.config()))
    table = target.table()
    p1 = target.ph(1)
    async with pool.lease() as lease:
        await lease.query(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
        try:
            with pytest.raises(DatabaseError) as info:
                await lease.execute_many(
                    f"INSERT INTO {table} (id) VALUES ({p1})", [(1,), (2,), (1,)]
                )
            assert info.value.sqlstate == ("23505" if target.kind == "postgres" else "23000")
            assert not in_tx(lease)
            assert (await lease.query(f"SELECT count(*) FROM {table}")).rows == [(0,)]
        finally:
            await lease.query(f"DROP TABLE {table}")


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_transaction_spans_queries_and_is_visible_to_others_only_after_commit(
    target: Target, outcome: str
) -> None:
    pool = target.track(create_pool(target.config(max_size=2)))
    table = target.table()
    p1 = target.ph(1)
    async with pool.lease() as setup:
        await setup.query(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    try:
        async with pool.lease() as writer, pool.lease() as reader:
            assert writer.session_id != reader.session_id
            await writer.begin()
            assert in_tx(writer)
            await writer.query(f"INSERT INTO {table} (id) VALUES ({p1})", [1])
            await writer.query(f"INSERT INTO {table} (id) VALUES ({p1})", [2])
            assert (await writer.query(f"SELECT count(*) FROM {table}")).rows == [(2,)]
            assert (await reader.query(f"SELECT count(*) FROM {table}")).rows == [(0,)]
            await (writer.commit() if outcome == "commit" else writer.rollback())
            assert not in_tx(writer)
            expected = 2 if outcome == "commit" else 0
            assert (await reader.query(f"SELECT count(*) FROM {table}")).rows == [(expected,)]
    finally:
        async with pool.lease() as cleanup:
            await cleanup.query(f"DROP TABLE {table}")


async def test_releasing_a_lease_mid_transaction_rolls_back(target: Target) -> None:
    pool = target.track(create_pool(target.config(max_size=1)))
    table = target.table()
    async with pool.lease() as lease:
        await lease.query(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
        first_session = lease.session_id
    try:
        lease = await pool.acquire()
        await lease.begin()
        await lease.query(f"INSERT INTO {table} (id) VALUES (1)")
        await pool.release(lease)  # no commit
        assert not in_tx(lease)
        async with pool.lease() as again:
            assert again.session_id == first_session  # same connection, rolled back, reused
            assert not in_tx(again)
            assert (await again.query(f"SELECT count(*) FROM {table}")).rows == [(0,)]
            # A transaction broken by an error is rolled back on release just the same.
            await again.begin()
            await again.query(f"INSERT INTO {table} (id) VALUES (1)")
            with pytest.raises(DatabaseError):
                await again.query(f"INSERT INTO {table} (id) VALUES (1)")
            assert in_tx(again)
        async with pool.lease() as third:
            assert third.session_id == first_session and not in_tx(third)
            assert (await third.query(f"SELECT count(*) FROM {table}")).rows == [(0,)]
        stats = pool.statistics()
        assert (stats.connections_opened, stats.connections_closed, stats.errors) == (1, 0, 0)
    finally:
        async with pool.lease() as cleanup:
            await cleanup.query(f"DROP TABLE {table}")


async def test_session_state_is_reset_between_leases(target: Target) -> None:
    pool = target.track(create_pool(target.config(max_size=1)))
    async with pool.lease() as lease:
        session = lease.session_id
        if target.kind == "postgres":
            await lease.query("SET statement_timeout = '4321ms'")
            await lease.query("CREATE TEMP TABLE scratch (a int)")
            await lease.query("SELECT pg_advisory_lock(424242)")
        else:
            await lease.query("SET @marker = 42")
            await lease.query("SET SESSION sql_mode = 'ANSI_QUOTES'")
            await lease.query("CREATE TEMPORARY TABLE scratch (a int)")
    async with pool.lease() as lease:
        assert lease.session_id == session  # reset, not reconnected
        if target.kind == "postgres":
            assert (await lease.query("SHOW statement_timeout")).rows == [("0",)]
            held = await lease.query(
                "SELECT count(*) FROM pg_locks"
                " WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            )
            assert held.rows == [(0,)]
            # The marker set at connect time survives the reset.
            assert (await lease.query("SHOW application_name")).rows == [(target.marker,)]
        else:
            assert (await lease.query("SELECT @marker")).rows == [(None,)]
            mode = (await lease.query("SELECT @@SESSION.sql_mode")).rows[0][0]
            assert "ANSI_QUOTES" not in mode
            assert (await lease.query("SELECT @@autocommit")).rows == [(1,)]
        with pytest.raises(DatabaseError):
            await lease.query("SELECT * FROM scratch")


async def test_reset_after_transactions_skips_plain_autocommit_leases(target: Target) -> None:
    pool = target.track(create_pool(target.config(max_size=1, reset="after-transactions")))
    pg = target.kind == "postgres"
    set_sql = "SET statement_timeout = '4321ms'" if pg else "SET @marker = 42"
    show_sql = "SHOW statement_timeout" if pg else "SELECT @marker"
    changed, fresh = ("4321ms", "0") if pg else (42, None)
    async with pool.lease() as lease:
        session = lease.session_id
        await lease.query(set_sql)  # autocommit only: no reset on release
    async with pool.lease() as lease:
        assert lease.session_id == session
        assert (await lease.query(show_sql)).rows == [(changed,)]
        await lease.begin()  # a transaction: this lease is reset on release
        await lease.query("SELECT 1")
        await lease.commit()
    async with pool.lease() as lease:
        assert (await lease.query(show_sql)).rows == [(fresh,)]
        await lease.query(set_sql)
        await lease.query("BEGIN")  # a transaction opened by a plain statement...
    async with pool.lease() as lease:  # ...is rolled back and reset as well
        assert not lease.in_transaction
        assert (await lease.query(show_sql)).rows == [(fresh,)]
    stats = pool.statistics()
    assert (stats.connections_opened, stats.errors) == (1, 0)


def test_reset_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="reset must be"):
        DatabaseConfig(kind="postgres", reset="sometimes")  # type: ignore[arg-type]


async def test_statement_errors_keep_the_lease_usable_and_are_counted(target: Target) -> None:
    pool = target.track(create_pool(target.config(max_size=1)))
    async with pool.lease() as lease:
        with pytest.raises(DatabaseError) as info:
            await lease.query("SELEC 1")
        if target.kind == "postgres":
            assert (info.value.code, info.value.sqlstate) == ("42601", "42601")
        else:
            assert (info.value.code, info.value.sqlstate) == ("1064", "42000")
        assert "SELEC" in info.value.message
        with pytest.raises(DatabaseError) as info:  # wrong number of parameters
            await lease.query(f"SELECT {target.ph(1)} AS a, {target.ph(2)} AS b", [1])
        assert info.value.code == "client" and info.value.sqlstate is None
        assert (await lease.query("SELECT 7")).rows == [(7,)]
        # Server notices/warnings are not turned into Python warnings (they are errors here).
        await lease.query("DROP TABLE IF EXISTS pools_no_such_table")
    stats = pool.statistics()
    assert (stats.statement_errors, stats.errors, stats.connections_opened) == (2, 0, 1)


async def test_lease_rules(target: Target) -> None:
    pool = target.track(create_pool(target.config(max_size=1)))
    lease = await pool.acquire()
    await lease.begin()
    with pytest.raises(PoolError, match="already open"):
        await lease.begin()
    await lease.rollback()
    await lease.commit()  # nothing open: nothing to do
    assert "PostgresLease" in repr(lease) or "MySQLLease" in repr(lease)
    await pool.release(lease)
    await pool.release(lease)  # idempotent
    assert pool.statistics().leases_served == 1
    assert "released" in repr(lease) and not lease.usable
    with pytest.raises(LeaseReleased):
        await lease.query("SELECT 1")
    other = target.track(create_pool(target.config(max_size=1)))
    async with other.lease() as foreign:
        with pytest.raises(PoolError, match="another pool"):
            await pool.release(foreign)


async def test_start_release_returns_once_the_connection_is_back(target: Target) -> None:
    pool = target.track(create_pool(target.config(min_size=1, max_size=1)))
    lease = await pool.acquire()
    await lease.query("SELECT 1")
    done = pool.start_release(lease)
    assert pool.start_release(lease) is done  # idempotent
    assert lease.released
    await done
    stats = pool.statistics()
    assert (stats.in_use, stats.idle) == (0, 1)
    async with pool.lease() as again:  # the one connection, reset and lent again
        assert (await again.query("SELECT 2")).rows == [(2,)]
