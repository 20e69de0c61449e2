"""Random request sequences against a running server leave it alive and its pools whole."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.dbpool.client import DbPoolClient, DbPoolError, connect

from .conftest import Env

ops = st.one_of(
    st.tuples(st.just("select"), st.sampled_from(["main", "other"])),
    st.tuples(st.just("bad_sql"), st.just("main")),
    st.tuples(st.just("insert"), st.integers(0, 4)),
    st.tuples(st.just("execute_many"), st.integers(0, 4)),
    st.tuples(st.just("begin"), st.sampled_from(["main", "main", "other", "nope"])),
    st.tuples(st.just("commit"), st.none()),
    st.tuples(st.just("rollback"), st.none()),
    st.tuples(st.just("ping"), st.none()),
    st.tuples(st.just("stats"), st.none()),
    st.tuples(st.just("burst"), st.integers(2, 12)),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("kill"), st.none()),
)

# Codes a correct server may answer each operation with (database_error covers
# duplicate keys and statements refused inside a failed PostgreSQL transaction).
ALLOWED = {
    "select": {"database_error"},
    "bad_sql": {"database_error"},
    "insert": {"database_error"},
    "execute_many": {"database_error"},
    "begin": {"already_in_transaction", "unknown_database"},
    "commit": {"no_transaction", "database_error"},
    "rollback": {"no_transaction"},
    "burst": {"database_error"},
}


async def apply(c: DbPoolClient, env: Env, op: str, arg: Any) -> None:
    t, p = env.table, env.ph
    match op:
        case "select":
            await c.execute(arg, f"SELECT count(*) FROM {t}")
        case "bad_sql":
            await c.execute(arg, "SELEC nothing")
        case "insert":
            await c.execute("main", f"INSERT INTO {t} VALUES ({p(1)}, 'x')", (arg,))
        case "execute_many":
            rows = [(arg * 10 + i,) for i in range(3)]
            await c.executemany("main", f"INSERT INTO {t} VALUES ({p(1)}, 'y')", rows)
        case "begin":
            await c.begin(arg)
        case "commit":
            await c.commit()
        case "rollback":
            await c.rollback()
        case "ping":
            await c.ping()
        case "stats":
            assert (await c.stats()).clients_connected >= 1
        case "burst":
            await asyncio.gather(*(c.execute("main", "SELECT 1") for _ in range(arg)))


async def garbage(env: Env, data: bytes) -> None:
    """A second connection that handshakes, sends junk and EOF: whatever the junk,
    the server must answer (or not) and close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
    try:
        writer.write(b"FDBP\x00\x01\x00\x00" + data)
        writer.write_eof()
        async with asyncio.timeout(20):
            while await reader.read(65536):
                pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


@settings(
    max_examples=int(os.environ.get("DBPOOL_PROP_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(ops, min_size=1, max_size=14))
async def test_random_sequences_keep_the_service_whole(
    env: Env, seq: list[tuple[str, Any]]
) -> None:
    c = await connect(env.port, timeout=30)
    try:
        for op, arg in seq:
            if op == "garbage":
                await garbage(env, arg)
                continue
            if op == "kill":
                c._writer.transport.abort()  # type: ignore[attr-defined]
                await c.close()
                c = await connect(env.port, timeout=30)
                continue
            try:
                await apply(c, env, op, arg)
            except DbPoolError as exc:
                assert exc.code in ALLOWED.get(op, set()), (op, arg, exc)
            # The client's view of the transaction follows the protocol's rules.
            stats = env.service.statistics()
            assert stats.transactions_open <= stats.clients_connected
    finally:
        with contextlib.suppress(DbPoolError):
            if c.in_transaction:
                await c.rollback()
        await c.close()
    await env.settled()
    stats = env.service.statistics()
    assert stats.requests_in_flight == 0
    assert stats.transactions_open == 0
    assert all(d.in_use == 0 and d.waiting == 0 for d in stats.databases.values())
    assert "internal_error" not in stats.errors
    assert "unencodable_result" not in stats.errors
    async with await connect(env.port) as probe:
        assert await probe.ping() >= 0
        await probe.execute("main", f"DELETE FROM {env.table}")
