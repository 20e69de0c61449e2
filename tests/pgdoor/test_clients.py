"""Unmodified PostgreSQL clients through the front door: asyncpg (with and
without its statement cache), psql, pgbench; the real PostgreSQL behind it,
reached through an ingress port of the workload's virtual network."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest

from .conftest import PASSWORD, Door, eventually, front_door


@pytest.mark.parametrize("cache", [100, 0], ids=["statement-cache", "no-statement-cache"])
async def test_asyncpg_queries_transactions_and_prepared_statements(door: Door, cache: int) -> None:
    conn = await door.connect(statement_cache_size=cache)
    try:
        assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
        row = await conn.fetchrow("SELECT $1::text AS t, $2::float8 AS f, NULL::int AS n", "é", 1.5)
        assert dict(row) == {"t": "é", "f": 1.5, "n": None}
        await conn.execute(f"CREATE TABLE {door.table} (id int PRIMARY KEY, note text)")
        async with conn.transaction():
            await conn.executemany(
                f"INSERT INTO {door.table} VALUES ($1, $2)", [(i, f"n{i}") for i in range(20)]
            )
            assert await conn.fetchval(f"SELECT count(*) FROM {door.table}") == 20
        stmt = await conn.prepare(f"SELECT note FROM {door.table} WHERE id = $1")
        for i in (3, 7, 11):
            assert await stmt.fetchval(i) == f"n{i}"
        # many rows, streamed through a cursor inside a transaction
        async with conn.transaction():
            got = [r[0] async for r in conn.cursor("SELECT generate_series(1, 5000)", prefetch=300)]
        assert got == list(range(1, 5001))
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(f"INSERT INTO {door.table} VALUES (1, 'again')")
        assert await conn.fetchval("SELECT 'still usable'") == "still usable"
        # a failed transaction is rolled back; the next one starts clean
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {door.table} VALUES (100, 'x')")
                await conn.fetchval("SELECT 1 / 0")
        assert await conn.fetchval(f"SELECT count(*) FROM {door.table} WHERE id = 100") == 0
    finally:
        await conn.close()
    await door.settled()
    stats = door.stats()
    assert stats.leases > 10 and stats.databases[door.database].leases_served >= stats.leases


async def test_psql_runs_a_query(door: Door) -> None:
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/psql", "-h", "127.0.0.1", "-p", str(door.port), "-U", "app", "-d", door.database,
        "-AtX", "-c", "SELECT 6 * 7, current_database()",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PGPASSWORD": PASSWORD},
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == f"42|{door.database}"


async def test_pgbench_initialises_and_runs_select_only(scratch_database: str) -> None:
    async with front_door(scratch_database, max_size=2) as door:

        async def pgbench(*args: str) -> str:
            proc = await asyncio.create_subprocess_exec(
                "pgbench", "-h", "127.0.0.1", "-p", str(door.port), "-U", "app", *args,
                scratch_database,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "PGPASSWORD": PASSWORD},
            )  # fmt: skip
            out, _ = await proc.communicate()
            assert proc.returncode == 0, out.decode()
            return out.decode()

        await pgbench("-i", "-q", "-s", "1")
        out = await pgbench("-S", "-t", "50", "-c", "4")
        assert "number of transactions actually processed: 200/200" in out
        out = await pgbench("-S", "-t", "20", "-c", "2", "-M", "prepared")
        assert "number of transactions actually processed: 40/40" in out
        await door.settled()
        assert door.pool().size <= 2


async def test_transactions_are_isolated_on_a_shared_server_session() -> None:
    async with front_door(max_size=1, min_size=1) as door:
        a = await door.connect()
        b = await door.connect(statement_cache_size=0)
        try:
            await a.execute(f"CREATE TABLE {door.table} (n int)")
            tx = a.transaction()
            await tx.start()
            await a.execute(f"INSERT INTO {door.table} VALUES (1)")
            # the only server session is A's until its transaction ends: B waits
            reading = asyncio.ensure_future(b.fetchval(f"SELECT count(*) FROM {door.table}"))
            await eventually(lambda: door.pool().waiting == 1)
            assert not reading.done()
            await tx.rollback()
            assert await reading == 0  # never saw A's uncommitted row
            async with a.transaction():
                await a.execute(f"INSERT INTO {door.table} VALUES (2)")
            assert await b.fetchval(f"SELECT sum(n) FROM {door.table}") == 2
            pids = {
                await a.fetchval("SELECT pg_backend_pid()"),
                await b.fetchval("SELECT pg_backend_pid()"),
            }
            assert len(pids) == 1  # one server session served both
        finally:
            await a.close()
            await b.close()


async def test_prepared_statements_survive_a_change_of_server_session() -> None:
    async with front_door(max_size=2, min_size=2) as door:
        x = await door.connect()  # asyncpg's statement cache: named statements
        other = await door.connect()
        try:
            query = "SELECT $1::int * 10, pg_backend_pid()"
            first = await x.fetchrow(query, 1)
            # hold the session X just used, so X's next statement lands on the other
            tx = other.transaction()
            await tx.start()
            held = await other.fetchval("SELECT pg_backend_pid()")
            assert held == first[1]
            second = await x.fetchrow(query, 2)
            assert second[0] == 20 and second[1] != first[1]
            stmt = await x.prepare("SELECT $1::text || '!'")
            await tx.commit()
            for word in ("a", "b", "c"):
                assert await stmt.fetchval(word) == word + "!"
        finally:
            await x.close()
            await other.close()


async def test_a_client_that_vanishes_mid_transaction_is_rolled_back(door: Door) -> None:
    setup = await door.connect()
    await setup.execute(f"CREATE TABLE {door.table} (n int)")
    await setup.close()
    await door.settled()
    gone = await door.connect()
    await gone.execute("BEGIN")
    await gone.execute(f"INSERT INTO {door.table} VALUES (1)")
    assert door.stats().clients_active == 1
    gone.terminate()  # the socket closes, no goodbye
    await door.settled()
    stats = door.stats()
    assert stats.transactions_abandoned == 1
    assert stats.databases[door.database].connections_closed == 0  # rolled back, reused
    check = await door.connect()
    try:
        assert await check.fetchval(f"SELECT count(*) FROM {door.table}") == 0
        assert await check.fetchval("SELECT current_setting('transaction_isolation')") is not None
    finally:
        await check.close()


async def test_cancel_reaches_the_server_session(door: Door) -> None:
    conn = await door.connect()
    try:
        with pytest.raises(TimeoutError):
            # asyncpg sends a CancelRequest when the timeout expires
            await conn.fetchval("SELECT pg_sleep(30)", timeout=0.5)
        assert await conn.fetchval("SELECT 'after cancel'") == "after cancel"
        assert door.stats().cancel_requests == 1
    finally:
        await conn.close()


async def test_session_state_does_not_leak_to_the_next_client() -> None:
    async with front_door(max_size=1) as door:
        a = await door.connect()
        await a.execute("SET statement_timeout = '1234s'")
        await a.close()
        b = await door.connect()
        try:
            assert await b.fetchval("SHOW statement_timeout") == "0"
        finally:
            await b.close()


async def test_sql_prepare_and_compound_listen_are_refused_with_sqlstate(door: Door) -> None:
    conn = await door.connect()
    try:
        with pytest.raises(asyncpg.FeatureNotSupportedError, match="only statement"):
            await conn.execute("LISTEN somewhere; SELECT 1")
        with pytest.raises(asyncpg.FeatureNotSupportedError):
            await conn.execute("PREPARE p AS SELECT 1")
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_admin_console_answers_show_commands_for_admins_only(door: Door) -> None:
    c = await door.connect()
    await c.fetchval("SELECT 1")
    admin = await asyncpg.connect(
        host="127.0.0.1", port=door.port, user="ops", database="pgbouncer", statement_cache_size=0
    )
    try:
        for command in ("POOLS", "STATS", "CLIENTS", "SERVERS"):
            # simple protocol: what psql and PgBouncer's console use
            await admin.execute(f"SHOW {command}")
        proc = await asyncio.create_subprocess_exec(
            "/usr/bin/psql", "-h", "127.0.0.1", "-p", str(door.port), "-U", "ops",
            "-d", "pgbouncer", "-AtX", "-F", ",", "-c", "SHOW POOLS",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        fields = out.decode().strip().split(",")
        assert fields[0] == door.database and fields[-1] == "transaction"
        with pytest.raises(asyncpg.PostgresError, match="unsupported admin command"):
            await admin.execute("DROP TABLE x")
    finally:
        await admin.close()
        await c.close()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await asyncpg.connect(host="127.0.0.1", port=door.port, user="tool", database="pgbouncer")


async def test_copy_in_and_out(door: Door) -> None:
    conn = await door.connect()
    try:
        await conn.execute(f"CREATE TABLE {door.table} (id int, note text)")
        rows = [(i, f"row {i}") for i in range(3000)]
        await conn.copy_records_to_table(door.table, records=rows)
        assert await conn.fetchval(f"SELECT count(*) FROM {door.table}") == 3000
        chunks: list[bytes] = []

        async def sink(data: bytes) -> None:
            chunks.append(data)

        await conn.copy_from_query(f"SELECT * FROM {door.table} ORDER BY id", output=sink)
        lines = b"".join(chunks).decode().splitlines()
        assert len(lines) == 3000 and lines[7] == "7\trow 7"
    finally:
        await conn.close()
    await door.settled()
