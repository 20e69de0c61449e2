"""The pure-Python guest SDK, run natively (blocking sockets in worker threads)."""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import datetime
import decimal
import socket
import struct
import sys
from typing import Any

import pytest

from services.dbpool.service import DbPoolConfig, DbPoolService

from .conftest import Env, db_config, eventually
from .guestsdk import GUEST_DIR, fabric_dbpool

DbPoolError = fabric_dbpool.DbPoolError


def run(fn: Any, *args: Any) -> Any:
    return asyncio.to_thread(fn, *args)


def count(conn: Any, env: Env) -> int:
    return int(conn.execute("main", f"SELECT count(*) FROM {env.table}").scalar())


def test_the_sdk_imports_only_the_standard_library() -> None:
    tree = ast.parse((GUEST_DIR / "fabric_dbpool.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    # Besides the standard library: the bindings componentize-py generates into
    # every component (the typed import, when the component was built with it).
    bindings = {"wit_world", "componentize_py_types"}
    assert imported - {"__future__"} - bindings <= set(sys.stdlib_module_names)


async def test_query_execute_many_and_types(env: Env) -> None:
    def scenario() -> None:
        with fabric_dbpool.connect(port=env.port, timeout=30) as conn:
            res = conn.execute("main", f"SELECT {env.ph(1)} + 1 AS n, {env.ph(2)} AS s", (1, "x"))
            assert (res.columns, res.rows, res.rowcount) == (["n", "s"], [(2, "x")], 1)
            n = conn.executemany(
                "main",
                f"INSERT INTO {env.table} VALUES ({env.ph(1)}, {env.ph(2)})",
                [(i, f"n{i}") for i in range(4)],
            )
            assert n == 4
            assert count(conn, env) == 4
            cast = "::numeric" if env.kind == "postgres" else ""
            dcast = "::date" if env.kind == "postgres" else ""
            res = conn.execute(
                "main",
                f"SELECT {env.ph(1)}{cast} AS d, {env.ph(2)}{dcast} AS day",
                (decimal.Decimal("3.25"), datetime.date(2024, 1, 31)),
            )
            d, day = res.rows[0]
            assert decimal.Decimal(d) == decimal.Decimal("3.25")
            if env.kind == "postgres":
                assert day == datetime.date(2024, 1, 31)
            assert conn.ping() >= 0

    await run(scenario)


async def test_mysql_native_types_arrive_typed(mysql_env: Env) -> None:
    def scenario() -> None:
        with fabric_dbpool.connect(port=mysql_env.port) as conn:
            res = conn.execute(
                "main",
                "SELECT CAST(1.50 AS DECIMAL(5,2)), DATE '2024-02-29',"
                " TIMESTAMP '2024-02-29 10:11:12', TIME '-01:02:03', X'00FF'",
            )
            assert res.rows == [
                (
                    decimal.Decimal("1.50"),
                    datetime.date(2024, 2, 29),
                    datetime.datetime(2024, 2, 29, 10, 11, 12),
                    -datetime.timedelta(hours=1, minutes=2, seconds=3),
                    b"\x00\xff",
                )
            ]

    await run(scenario)


async def test_transaction_commits_and_rolls_back_on_exception(env: Env) -> None:
    def scenario() -> None:
        with (
            fabric_dbpool.connect(port=env.port) as conn,
            fabric_dbpool.connect(port=env.port) as other,
        ):
            with conn.transaction("main"):
                conn.execute("main", f"INSERT INTO {env.table} VALUES (1, 'a')")
                conn.execute("main", f"INSERT INTO {env.table} VALUES (2, 'b')")
                assert count(conn, env) == 2
                assert count(other, env) == 0
                assert conn.in_transaction == "main"
            assert count(other, env) == 2
            with pytest.raises(ZeroDivisionError):
                with conn.transaction("main"):
                    conn.execute("main", f"INSERT INTO {env.table} VALUES (3, 'c')")
                    _ = 1 / 0
            assert conn.in_transaction is None
            assert count(other, env) == 2

    await run(scenario)
    await env.service.settled()
    assert env.in_use() == 0


async def test_a_client_killed_mid_transaction_is_rolled_back(env: Env) -> None:
    before = env.service.statistics().transactions_abandoned

    def scenario() -> None:
        conn = fabric_dbpool.connect(port=env.port)
        conn.begin("main")
        conn.execute("main", f"INSERT INTO {env.table} VALUES (1, 'ghost')")
        # Abrupt: RST instead of FIN, no rollback, no goodbye.
        conn._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn._sock.close()

    await run(scenario)
    await env.settled()
    stats = env.service.statistics()
    assert stats.transactions_abandoned == before + 1
    assert stats.transactions_open == 0
    assert stats.databases["main"].in_use == 0

    def check() -> None:
        with fabric_dbpool.connect(port=env.port) as conn:
            assert count(conn, env) == 0

    await run(check)


async def test_database_errors_and_the_connection_survives(env: Env) -> None:
    def scenario() -> None:
        with fabric_dbpool.connect(port=env.port) as conn:
            with pytest.raises(DbPoolError) as info:
                conn.execute("main", "SELECT FROM WHERE")
            assert info.value.code == "database_error"
            assert info.value.sqlstate == ("42601" if env.kind == "postgres" else "42000")
            with pytest.raises(DbPoolError) as info:
                conn.execute("main", "SELECT * FROM dbpool_missing_table")
            assert info.value.sqlstate == ("42P01" if env.kind == "postgres" else "42S02")
            with pytest.raises(DbPoolError) as info:
                conn.execute("nope", "SELECT 1")
            assert (info.value.code, info.value.sqlstate) == ("unknown_database", None)
            assert conn.execute("main", "SELECT 1").scalar() == 1

    await run(scenario)


async def test_fifty_clients_share_a_pool_of_five(kind: str) -> None:
    cfg = DbPoolConfig(port=0, databases={"main": db_config(kind, min_size=0, max_size=5)})
    async with DbPoolService(cfg) as service:
        port = service.port
        peak = 0

        def client(i: int) -> int:
            with fabric_dbpool.connect(port=port, timeout=60) as conn:
                total = 0
                for j in range(3):
                    sql = f"SELECT {'$1::int' if kind == 'postgres' else '%s'} + {j}"
                    total += conn.execute("main", sql, (i,)).scalar()
                with conn.transaction("main"):
                    total += conn.execute("main", "SELECT 1").scalar()
                return int(total)

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, service.statistics().databases["main"].size)
                await asyncio.sleep(0.005)

        watcher = asyncio.ensure_future(watch())
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            results = await asyncio.gather(
                *(loop.run_in_executor(pool, client, i) for i in range(50))
            )
        watcher.cancel()
        assert results == [3 * i + 3 + 1 for i in range(50)]
        await eventually(lambda: service.statistics().clients_connected == 0)
        await service.settled()  # the last replies may come before their leases are back
        stats = service.statistics()
        db = stats.databases["main"]
        assert peak <= 5 and db.size <= 5
        assert db.in_use == 0
        assert stats.clients_total == 50
        assert stats.requests == {"query": 200, "begin": 50, "commit": 50}
        assert stats.errors == {}
        assert db.leases_served == 150 + 50


async def test_oversized_request_is_refused_locally_and_the_connection_stays(env: Env) -> None:
    def scenario() -> None:
        with fabric_dbpool.connect(port=env.port) as conn:
            big = "x" * (conn.max_frame_size + 1)
            with pytest.raises(DbPoolError) as info:
                conn.execute("main", "SELECT 1", (big,))
            assert info.value.code == "frame_too_large"
            assert not conn.closed
            assert conn.execute("main", "SELECT 1").scalar() == 1

    await run(scenario)


async def test_stats_returns_a_dict_matching_what_happened(env: Env) -> None:
    def scenario() -> dict[str, Any]:
        with fabric_dbpool.connect(port=env.port) as conn:
            conn.execute("main", "SELECT 1")
            with pytest.raises(DbPoolError):
                conn.commit()
            stats: dict[str, Any] = conn.stats()
            return stats

    stats = await run(scenario)
    assert stats["clients_connected"] == 1
    assert stats["requests"] == {"query": 1, "commit": 1}
    assert stats["errors"] == {"no_transaction": 1}
    assert stats["databases"]["main"]["kind"] == env.kind


async def test_server_closing_reaches_a_blocked_guest(pg_env: Env) -> None:
    conn = await run(fabric_dbpool.connect, pg_env.port)
    await run(conn.begin, "main")
    await pg_env.service.server.close()  # type: ignore[union-attr]
    with pytest.raises(DbPoolError) as info:
        await run(conn.ping)
    assert info.value.code in ("server_closing", "disconnected")
    assert conn.closed
    assert pg_env.service.statistics().databases["main"].in_use == 0
