"""The typed ``fabric:dbpool/sql`` import inside a running workload.

The dbbench guest built twice: against the world ``sql-command`` (its SDK
reaches the service in-process through the import) and against ``command``
(the SDK falls back to the wire protocol over the virtual loopback).  Real
PostgreSQL and MariaDB behind the pools; the service statistics come from
``Fabric.status()``, table contents from connections of their own.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fabric.build import build_wat_guest
from fabric.engine import DeadlineExceeded, GuestTrap
from fabric.guests import dbbench_sql
from fabric.runtime import Runtime
from services.dbpool.sqlimport import SQL_INTERFACE
from tests.guestlib import ROOT
from tests.reference.guests import dbbench_guest

from .test_components import DBS, PORT, Run, Stack, eventually, outside, stack, table_ids

WAT_SQL_SELECT1 = ROOT / "tests" / "guests" / "wat" / "sql_select1.wat"

KINDS = pytest.mark.parametrize("kind", ["postgres", "mysql"])


@pytest.fixture(scope="module")
def sql_wasm() -> Path:
    return dbbench_sql()


@pytest.fixture(scope="module")
def socket_wasm() -> Path:
    return dbbench_guest()


@pytest.fixture
async def st(runtime: Runtime, sql_wasm: Path, socket_wasm: Path) -> AsyncIterator[Stack]:
    """``bench`` and ``short`` use the import; ``sock`` is the build without it;
    ``wat`` is the hand-written WAT component importing the interface."""
    wat = build_wat_guest(WAT_SQL_SELECT1)
    async with stack(runtime, sql_wasm, extra={"sock": socket_wasm, "wat": wat}) as s:
        yield s


def ph(kind: str, n: int) -> str:
    return f"${n}" if kind == "postgres" else "%s"


# --------------------------------------------------------------- values

UTC = datetime.UTC
PLUS2 = datetime.timezone(datetime.timedelta(hours=2))
UID = "12345678-1234-5678-1234-567812345678"

# (typed parameter as the guest's `typed` mode takes it, SQL expression, value expected back)
PG_CASES: list[tuple[list[Any], str, Any]] = [
    [["none", None], "{}::int", None],
    [["bool", True], "{}::bool", True],
    [["bool", False], "{}::bool", False],
    [["int", 2**40], "{}::bigint", 2**40],
    [["int", -(2**63)], "{}::bigint", -(2**63)],
    [["int", 2**70], "{}::numeric", decimal.Decimal(2**70)],
    [["float", 1.5], "{}::float8", 1.5],
    [["float", -1e300], "{}::float8", -1e300],
    [["str", "héllo ✓"], "{}::text", "héllo ✓"],
    [["bytes", "00ff10"], "{}::bytea", b"\x00\xff\x10"],
    [["decimal", "12.345"], "{}::numeric", decimal.Decimal("12.345")],
    [["decimal", "NaN"], "{}::numeric", "NaN"],
    [["date", "2024-02-29"], "{}::date", datetime.date(2024, 2, 29)],
    [["time", "12:34:56.789000"], "{}::time", datetime.time(12, 34, 56, 789000)],
    [["time", "12:00:00+02:00"], "{}::timetz", datetime.time(12, 0, tzinfo=PLUS2)],
    [
        ["datetime", "2024-02-29T12:34:56.789000"],
        "{}::timestamp",
        datetime.datetime(2024, 2, 29, 12, 34, 56, 789000),
    ],
    [
        ["datetime", "2024-02-29T12:34:56+02:00"],
        "{}::timestamptz",
        datetime.datetime(2024, 2, 29, 10, 34, 56, tzinfo=UTC),
    ],
    [["timedelta", [1, 5, 250]], "{}::interval", datetime.timedelta(1, 5, 250)],
    [["uuid", UID], "{}::uuid", uuid.UUID(UID)],
    [["str", '{"a": [1, 2]}'], "{}::jsonb", '{"a": [1, 2]}'],
    [["list", [1, 2, 3]], "{}::int[]", [1, 2, 3]],
]

MY_CASES: list[tuple[list[Any], str, Any]] = [
    [["none", None], "{}", None],
    [["bool", True], "{}", 1],  # MySQL has no boolean type
    [["int", 2**40], "{}", 2**40],
    [["int", -(2**63)], "{}", -(2**63)],
    [["int", 2**70], "CAST({} AS DECIMAL(30,0))", decimal.Decimal(2**70)],
    [["float", 1.5], "CAST({} AS DOUBLE)", 1.5],
    [["str", "héllo ✓"], "{}", "héllo ✓"],
    [["bytes", "00ff10"], "{}", b"\x00\xff\x10"],
    [["decimal", "12.345"], "CAST({} AS DECIMAL(10,3))", decimal.Decimal("12.345")],
    [["date", "2024-02-29"], "CAST({} AS DATE)", datetime.date(2024, 2, 29)],
    [
        ["datetime", "2024-02-29T12:34:56.789000"],
        "CAST({} AS DATETIME(6))",
        datetime.datetime(2024, 2, 29, 12, 34, 56, 789000),
    ],
    # MySQL TIME is a duration: times and timedeltas both come back as timedelta
    [["time", "12:34:56.789000"], "CAST({} AS TIME(6))", datetime.timedelta(0, 45296, 789000)],
    [["timedelta", [1, 5, 250]], "CAST({} AS TIME(6))", datetime.timedelta(1, 5, 250)],
    [["str", '{"a": [1, 2]}'], "JSON_COMPACT({})", '{"a":[1,2]}'],
]


def expected_repr(value: Any) -> str:
    if value == "NaN":
        return "Decimal:Decimal('NaN')"
    return f"{type(value).__name__}:{value!r}"


async def typed(st: Stack, kind: str, component: str = "bench") -> Run:
    cases = PG_CASES if kind == "postgres" else MY_CASES
    exprs = [expr.format(ph(kind, i + 1)) for i, (_, expr, _) in enumerate(cases)]
    sql = "SELECT " + ", ".join(f"{e} AS c{i}" for i, e in enumerate(exprs))
    params = json.dumps([p for p, _, _ in cases])
    return await st.run("typed", PORT, DBS[kind], sql, params, component=component)


@KINDS
async def test_every_value_type_round_trips(st: Stack, kind: str) -> None:
    cases = PG_CASES if kind == "postgres" else MY_CASES
    run = (await typed(st, kind)).check()
    assert run.facts["transport"] == "import"
    assert json.loads(run.facts["columns"]) == [f"c{i}" for i in range(len(cases))]
    assert json.loads(run.facts["values"]) == [expected_repr(v) for _, _, v in cases]
    # The socket SDK gives the same Python values for the same statement.
    sock = (await typed(st, kind, component="sock")).check()
    assert sock.facts["transport"] == "socket"
    assert sock.facts["values"] == run.facts["values"]
    stats = await st.settled()
    assert stats.requests == {"query": 2}
    assert stats.clients_total == 1  # only the socket build connected


@KINDS
async def test_database_errors_arrive_with_sqlstate_and_code(st: Stack, kind: str) -> None:
    missing = await st.query(kind, f"SELECT * FROM {st.table}_missing WHERE id = {ph(kind, 1)}", 1)
    assert missing.exit_code == 1
    assert missing.facts["transport"] == "import"
    assert missing.facts["code"] == "database_error"
    assert missing.facts["error"] == ("42P01" if kind == "postgres" else "42S02")
    assert missing.facts["db_code"] == ("42P01" if kind == "postgres" else "1146")
    syntax = await st.query(kind, "SELEC 1")
    assert syntax.facts["code"] == "database_error"
    assert syntax.facts["error"] == ("42601" if kind == "postgres" else "42000")
    assert syntax.facts["db_code"] == ("42601" if kind == "postgres" else "1064")
    unknown = await st.run("query", PORT, "nosuchdb", "SELECT 1", "[]")
    assert unknown.facts["code"] == "unknown_database"
    stats = await st.settled()
    assert stats.errors == {"database_error": 2, "unknown_database": 1}
    assert st.db(kind).statement_errors == 2


async def test_a_port_without_a_dbpool_service_is_disconnected(st: Stack) -> None:
    run = await st.run("query", PORT + 1, "pg", "SELECT 1", "[]")
    assert run.exit_code == 1
    assert run.facts["code"] == "disconnected"
    assert str(PORT + 1) in run.facts["message"]


@KINDS
async def test_transaction_spans_calls_of_one_invocation(st: Stack, kind: str) -> None:
    db = DBS[kind]
    committed = (await st.run("txn", PORT, db, st.table, 1, 3, "commit")).check()
    assert committed.facts["count_inside"] == "3"
    rolled = (await st.run("txn", PORT, db, st.table, 10, 3, "rollback")).check()
    assert rolled.facts["count_inside"] == "3"
    assert await table_ids(kind, st.table) == [1, 2, 3]
    stats = await st.settled()
    assert stats.requests == {"begin": 2, "query": 8, "commit": 1, "rollback": 1}
    assert stats.transactions_open == 0
    assert stats.transactions_abandoned == 0
    assert stats.clients_total == 0
    assert (stats.local_sessions, stats.local_sessions_total) == (0, 2)
    assert st.db(kind).leases_served == 2  # one pinned lease per transaction


@KINDS
async def test_trap_mid_transaction_rolls_back_and_returns_the_lease(st: Stack, kind: str) -> None:
    with pytest.raises(GuestTrap):
        await st.run("txn-trap", PORT, DBS[kind], st.table, 7)
    assert "inserted=7" in "\n".join(st.guest_lines())
    stats = await st.settled()
    assert stats.transactions_open == 0
    assert stats.transactions_abandoned == 1
    assert stats.requests == {"begin": 1, "query": 1}
    assert (stats.local_sessions, stats.local_sessions_total) == (0, 1)
    assert st.db(kind).in_use == 0
    assert await table_ids(kind, st.table) == []
    # The row lock went with the rollback: the same id commits at once.
    (await st.run("txn", PORT, DBS[kind], st.table, 7, 1, "commit")).check()
    assert await table_ids(kind, st.table) == [7]


@KINDS
async def test_timeout_mid_transaction_rolls_back_and_returns_the_lease(
    st: Stack, kind: str
) -> None:
    invocation = asyncio.create_task(
        st.run("txn-sleep", PORT, DBS[kind], st.table, 5, 600, component="short")
    )

    async def holding() -> bool:
        s = st.stats()
        return s.transactions_open == 1 and s.requests.get("query") == 1

    await eventually(holding)  # the insert is done; the guest now sleeps in its transaction
    assert st.db(kind).in_use == 1
    with pytest.raises(DeadlineExceeded):
        await invocation
    stats = await st.settled()
    assert stats.transactions_open == 0
    assert stats.transactions_abandoned == 1
    assert "commit" not in stats.requests
    assert await table_ids(kind, st.table) == []
    (await st.run("txn", PORT, DBS[kind], st.table, 5, 1, "commit")).check()
    assert await table_ids(kind, st.table) == [5]


async def test_only_importing_components_get_the_interface(st: Stack, runtime: Runtime) -> None:
    wl = st.workload
    bench, sock = wl.components["bench"], wl.components["sock"]
    assert any(name.startswith(SQL_INTERFACE) for name in bench.component.imports)
    assert not any(name.startswith(SQL_INTERFACE) for name in sock.component.imports)
    assert bench.linker.provides(SQL_INTERFACE) is not None
    assert sock.linker is runtime.linker  # untouched: the shared WASI linker
    assert runtime.linker.provides(SQL_INTERFACE) is None
    run = (await st.query("postgres", "SELECT $1::int + 1 AS n", 41)).check()
    assert json.loads(run.facts["rows"]) == [[42]]
    sock_run = (
        await st.run("query", PORT, "pg", "SELECT $1::int + 1 AS n", "[41]", component="sock")
    ).check()
    assert sock_run.facts["transport"] == "socket"
    assert json.loads(sock_run.facts["rows"]) == [[42]]
    stats = await st.settled()
    assert stats.clients_total == 1
    assert stats.requests == {"query": 2}


@KINDS
async def test_a_wat_component_uses_the_import(st: Stack, kind: str) -> None:
    ok = (await st.run(PORT, DBS[kind], component="wat")).check()
    assert ok.stdout == ""
    # An unknown database: the query returns err, so does the component.
    bad = await st.run(PORT, "nosuchdb", component="wat")
    assert bad.exit_code == 1
    # No service on the port: open returns err.
    closed = await st.run(PORT + 1, DBS[kind], component="wat")
    assert closed.exit_code == 1
    stats = await st.settled()
    assert stats.requests == {"query": 2}
    assert stats.errors == {"unknown_database": 1}
    assert stats.clients_total == 0
    assert st.db(kind).leases_served == 1


@KINDS
async def test_a_deadline_during_a_statement_discards_the_connection(st: Stack, kind: str) -> None:
    sleep = "SELECT pg_sleep(600)" if kind == "postgres" else "SELECT SLEEP(600)"
    before = st.db(kind)
    with pytest.raises(DeadlineExceeded):
        await st.run("query", PORT, DBS[kind], sleep, "[]", component="short")
    stats = await st.settled()
    after = st.db(kind)
    assert after.in_use == 0
    # Interrupted mid-statement, its state unknown: closed rather than reused.
    assert after.connections_closed == before.connections_closed + 1
    assert stats.transactions_abandoned == 0


@KINDS
async def test_the_sdk_api_is_the_same_through_the_import(st: Stack, kind: str) -> None:
    facts = {}
    for component in ("bench", "sock"):
        run = (
            await st.run("sdk", PORT, DBS[kind], st.table, ph(kind, 1), component=component)
        ).check()
        facts[component] = run.facts
        await outside_delete(kind, st.table)
    imported, sock = facts["bench"], facts["sock"]
    assert imported.pop("transport") == "import"
    assert sock.pop("transport") == "socket"
    assert (
        imported
        == sock
        == {
            "in_transaction": DBS[kind],
            "inserted": "2",
            "rolled_back": "yes",
            "in_transaction_after": "None",
            "count": "2",
            "ping": "ok",
            "stats_transactions_open": "0",
            "closed": "True",
        }
    )
    stats = await st.settled()
    # per run: begin, execute_many, commit, begin, query, rollback, query, stats;
    # a ping is a round trip only on the socket
    assert stats.requests == {
        "begin": 4,
        "execute_many": 2,
        "commit": 2,
        "query": 4,
        "rollback": 2,
        "stats": 2,
        "ping": 1,
    }
    assert stats.clients_total == 1
    assert stats.transactions_abandoned == 0


async def outside_delete(kind: str, table: str) -> None:
    await outside(kind, f"DELETE FROM {table}")
