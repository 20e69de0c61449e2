"""The host side of the typed import without a guest: value conversion as plain
functions, and `LocalSession` against a real service (PostgreSQL, MariaDB)."""

from __future__ import annotations

import datetime
import decimal
import enum
import ipaddress
import json
import math
import uuid
from typing import Any

import pytest

from fabric.engine import Err
from services.dbpool.client import DbPoolError
from services.dbpool.messages import Limits
from services.dbpool.sqlimport import (
    SqlConnection,
    error_to_wit,
    find_backend,
    from_wit,
    rows_to_wit,
    sql_interface,
    to_wit,
)

from .conftest import KINDS, Env, eventually, make_env

UTC = datetime.UTC


class Color(enum.IntEnum):
    RED = 3


# (Python value, WIT case) pairs that convert both ways unchanged
ROUND_TRIPS: list[tuple[Any, tuple[str, Any]]] = [
    (None, ("null", None)),
    (True, ("boolean", True)),
    (False, ("boolean", False)),
    (0, ("int64", 0)),
    (-(2**63), ("int64", -(2**63))),
    (2**63 - 1, ("int64", 2**63 - 1)),
    (1.25, ("float64", 1.25)),
    ("héllo ✓", ("text", "héllo ✓")),
    (b"\x00\xff", ("bytes", b"\x00\xff")),
    (decimal.Decimal("-12.340"), ("decimal", "-12.340")),
    (decimal.Decimal("-Infinity"), ("decimal", "-Infinity")),
    (datetime.date(2024, 2, 29), ("date", "2024-02-29")),
    (datetime.time(1, 2, 3, 4), ("time", "01:02:03.000004")),
    (
        datetime.time(1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
        ("time", "01:02:00-05:00"),
    ),
    (datetime.datetime(2024, 2, 29, 23, 59, 1), ("timestamp", "2024-02-29T23:59:01")),
    (
        datetime.datetime(2024, 2, 29, 23, 59, 1, 5, tzinfo=UTC),
        ("timestamp", "2024-02-29T23:59:01.000005+00:00"),
    ),
    (
        datetime.timedelta(days=-1, seconds=3, microseconds=7),
        ("interval", {"days": -1, "seconds": 3, "microseconds": 7}),
    ),
    (
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        ("uuid", "12345678-1234-5678-1234-567812345678"),
    ),
    ([1, "a", None], ("json", '[1,"a",null]')),
    ({"k": [1.5]}, ("json", '{"k":[1.5]}')),
]


@pytest.mark.parametrize(("value", "wit"), ROUND_TRIPS, ids=[repr(w[0]) for _, w in ROUND_TRIPS])
def test_values_convert_both_ways(value: Any, wit: tuple[str, Any]) -> None:
    assert to_wit(value) == wit
    back = from_wit(wit)
    assert back == value
    assert type(back) is type(value)


def test_values_the_variant_has_no_case_for() -> None:
    assert to_wit(2**63) == ("decimal", str(2**63))  # MySQL BIGINT UNSIGNED
    assert to_wit(-(2**70)) == ("decimal", str(-(2**70)))
    assert from_wit(("decimal", str(2**70))) == decimal.Decimal(2**70)
    assert to_wit(Color.RED) == ("int64", 3)
    assert to_wit(bytearray(b"ab")) == ("bytes", b"ab")
    assert to_wit(memoryview(b"cd")) == ("bytes", b"cd")
    assert to_wit((1, 2)) == ("json", "[1,2]")
    assert to_wit([decimal.Decimal("1.5"), datetime.date(2024, 1, 2), b"\x01"]) == (
        "json",
        '["1.5","2024-01-02","01"]',
    )
    assert to_wit(ipaddress.ip_address("10.0.0.1")) == ("text", "10.0.0.1")
    nan = to_wit(float("nan"))
    assert nan[0] == "float64" and math.isnan(nan[1])


@pytest.mark.parametrize(
    "wit",
    [
        ("date", "2024-02-30"),
        ("time", "25:00"),
        ("timestamp", "yesterday"),
        ("decimal", "1,5"),
        ("uuid", "not-a-uuid"),
        ("json", "{"),
        ("interval", {"days": 1}),
        ("no-such-case", 1),
    ],
)
def test_malformed_values_raise_value_error(wit: tuple[str, Any]) -> None:
    with pytest.raises(ValueError, match=wit[0]):
        from_wit(wit)


def test_rows_and_errors_as_wit_records() -> None:
    rows = rows_to_wit(["a", "b"], [(1, None), (2, "x")], 2)
    assert rows == {
        "columns": ["a", "b"],
        "rows": [[("int64", 1), ("null", None)], [("int64", 2), ("text", "x")]],
        "rowcount": 2,
    }
    err = error_to_wit(DbPoolError("database_error", "42P01", "no table", "42P01"))
    assert err == {
        "code": "database_error",
        "sqlstate": "42P01",
        "db-code": "42P01",
        "message": "no table",
    }


def test_the_interface_defines_every_member_of_the_wit() -> None:
    iface = sql_interface(lambda port: None)
    assert iface.name == "fabric:dbpool/sql"
    assert set(iface.resources) == {"connection"}
    assert set(iface.funcs) == {
        "[static]connection.open",
        "[method]connection.query",
        "[method]connection.execute",
        "[method]connection.execute-many",
        "[method]connection.begin",
        "[method]connection.commit",
        "[method]connection.rollback",
        "[method]connection.stats",
    }


# ------------------------------------------------------------ LocalSession


async def test_backend_is_found_by_port(env: Env) -> None:
    service = env.service
    assert find_backend([object(), service], service.port) is service
    assert find_backend([service], service.port + 1) is None


async def test_local_session_queries_and_counts_like_a_client(env: Env) -> None:
    session = env.service.open_session()
    cast = "::int" if env.kind == "postgres" else ""
    res = await session.query("main", f"SELECT {env.ph(1)}{cast} AS n", [7])
    assert (res.columns, res.rows) == (["n"], [(7,)])
    n = await session.execute_many(
        "main", f"INSERT INTO {env.table} (id, name) VALUES ({env.ph(1)}, 'x')", [(1,), (2,)]
    )
    assert n == 2
    with pytest.raises(DbPoolError) as caught:
        await session.query("main", "SELEC 1")
    assert caught.value.code == "database_error"
    assert caught.value.sqlstate == ("42601" if env.kind == "postgres" else "42000")
    with pytest.raises(DbPoolError) as unknown:
        await session.query("nope", "SELECT 1")
    assert unknown.value.code == "unknown_database"
    assert session.statistics().requests == {"query": 3, "execute_many": 1, "stats": 1}
    s = env.service.statistics()
    assert s.errors == {"database_error": 1, "unknown_database": 1}
    assert s.clients_total == 0
    assert (s.local_sessions, s.local_sessions_total) == (1, 1)
    await session.aclose()
    with pytest.raises(DbPoolError) as closed:
        await session.query("main", "SELECT 1")
    assert closed.value.code == "disconnected"
    assert env.service.statistics().local_sessions == 0


async def test_closing_a_session_rolls_back_its_transaction(env: Env) -> None:
    session = env.service.open_session()
    await session.begin("main")
    await session.query("main", f"INSERT INTO {env.table} (id, name) VALUES (1, 'a')")
    # another database runs outside the transaction
    await session.query("other", "SELECT 1")
    with pytest.raises(DbPoolError) as again:
        await session.begin("other")
    assert again.value.code == "already_in_transaction"
    stats = env.service.statistics()
    assert stats.transactions_open == 1
    assert env.in_use() == 1
    await session.aclose()
    stats = env.service.statistics()
    assert stats.transactions_open == 0
    assert stats.transactions_abandoned == 1
    assert env.in_use() == 0
    check = env.service.open_session()
    res = await check.query("main", f"SELECT count(*) FROM {env.table}")
    assert res.rows[0][0] == 0
    await check.aclose()


async def test_commit_rollback_and_a_failed_begin(env: Env) -> None:
    session = env.service.open_session()
    with pytest.raises(DbPoolError) as none:
        await session.commit()
    assert none.value.code == "no_transaction"
    await session.begin("main")
    await session.query("main", f"INSERT INTO {env.table} (id, name) VALUES (1, 'a')")
    await session.commit()
    await session.begin("main")
    await session.query("main", f"INSERT INTO {env.table} (id, name) VALUES (2, 'b')")
    await session.rollback()
    res = await session.query("main", f"SELECT id FROM {env.table} ORDER BY id")
    assert res.rows == [(1,)]
    # A begin on an unknown database opens the scope; statements for it are refused.
    with pytest.raises(DbPoolError) as bad:
        await session.begin("nope")
    assert bad.value.code == "unknown_database"
    with pytest.raises(DbPoolError) as aborted:
        await session.query("nope", "SELECT 1")
    assert aborted.value.code == "transaction_aborted"
    await session.rollback()
    session.close()
    await eventually(lambda: env.in_use() == 0)
    s = env.service.statistics()
    assert s.transactions_abandoned == 0
    assert s.requests["begin"] == 3 and s.requests["commit"] == 2 and s.requests["rollback"] == 2


async def test_server_close_rolls_back_local_transactions(env: Env) -> None:
    session = env.service.open_session()
    await session.begin("main")
    await session.query("main", f"INSERT INTO {env.table} (id, name) VALUES (3, 'c')")
    assert env.service.statistics().transactions_open == 1
    assert env.service.server is not None
    await env.service.server.close()
    assert session.closed
    assert env.in_use() == 0
    assert env.service.statistics().transactions_abandoned == 1


async def test_the_host_functions_against_a_service(env: Env) -> None:
    """The interface's functions called as the engine calls them (store data first)."""
    funcs = {
        name.split(".")[-1]: f.impl
        for name, f in sql_interface(lambda port: find_backend([env.service], port)).funcs.items()
    }
    with pytest.raises(Err) as nobody:
        funcs["open"](None, env.port + 1)
    assert nobody.value.value["code"] == "disconnected"
    conn = funcs["open"](None, env.port)
    assert isinstance(conn, SqlConnection)
    p1 = env.ph(1)
    insert = f"INSERT INTO {env.table} (id, name) VALUES ({p1}, 'x')"
    assert await funcs["execute"](None, conn, "main", insert, [("int64", 1)]) == 1
    assert await funcs["execute-many"](None, conn, "main", insert, [[("int64", 2)]]) == 1
    await funcs["begin"](None, conn, "main")
    assert await funcs["execute"](None, conn, "main", insert, [("int64", 3)]) == 1
    await funcs["rollback"](None, conn)
    rows = await funcs["query"](None, conn, "main", f"SELECT id FROM {env.table} ORDER BY id", [])
    assert rows == {"columns": ["id"], "rows": [[("int64", 1)], [("int64", 2)]], "rowcount": 2}
    with pytest.raises(Err) as bad:
        await funcs["query"](None, conn, "main", "SELECT 1", [("date", "2024-13-01")])
    assert bad.value.value["code"] == "invalid_value"
    with pytest.raises(Err) as dup:
        await funcs["execute"](None, conn, "main", insert, [("int64", 1)])
    err = dup.value.value
    assert err["code"] == "database_error"
    assert err["sqlstate"] == ("23505" if env.kind == "postgres" else "23000")
    assert err["db-code"] == ("23505" if env.kind == "postgres" else "1062")
    stats = json.loads(funcs["stats"](None, conn))
    assert stats["requests"]["query"] == 4
    assert stats["errors"] == {"database_error": 1}
    await funcs["begin"](None, conn, "main")
    conn.drop()  # the guest drops its handle with the transaction open
    await eventually(lambda: env.in_use() == 0)
    assert env.service.statistics().transactions_abandoned == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_local_sessions_keep_the_result_limits(kind: str) -> None:
    # The typed import reads results in chunks under the same limits as a socket client.
    limits = Limits(max_result_rows=1000, max_result_size=4096)
    async with make_env(kind, limits=limits) as env:
        session = env.service.open_session()
        many = (
            "SELECT generate_series(1, 100000)"
            if kind == "postgres"
            else "SELECT seq FROM seq_1_to_100000"
        )
        with pytest.raises(DbPoolError) as rows:
            await session.query("main", many)
        assert rows.value.code == "result_too_large"
        wide = "SELECT repeat('x', 100) AS s FROM " + (
            "generate_series(1, 100) AS g" if kind == "postgres" else "seq_1_to_100"
        )
        with pytest.raises(DbPoolError) as size:
            await session.query("main", wide)
        assert size.value.code == "result_too_large"
        # ...and inside a transaction, which stays usable
        await session.begin("main")
        with pytest.raises(DbPoolError):
            await session.query("main", many)
        res = await session.query("main", "SELECT 1 AS n")
        assert res.rows == [(1,)]
        await session.commit()
        assert env.service.statistics().errors.get("result_too_large") == 3
        await session.aclose()
