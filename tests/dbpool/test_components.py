"""Components borrowing pooled connections inside a running workload.

The dbpool service runs as a native service of a fabric workload; the
dbbench guest (componentize-py, CPython in wasm) is invoked through
``WorkloadRuntime.invoke`` and reaches the service over the workload's
virtual loopback.  Real PostgreSQL and MariaDB behind the pools; what the
databases hold is checked from outside with asyncpg and aiomysql, and the
pool counters through ``Fabric.status()`` (what ``fabric status`` shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomysql
import asyncpg
import msgspec
import pytest

from fabric.engine import DeadlineExceeded, GuestTrap
from fabric.runtime import Runtime
from fabric.workload import load_manifest, manifest_from_dict
from fabric.workload.runtime import Fabric, WorkloadRuntime
from services.dbpool.messages import DatabaseStats, ServerStats
from tests.guestlib import ROOT
from tests.reference.guests import dbbench_guest

PORT = 7432  # the service's port on the workload's virtual loopback
WORKLOAD = "dbtest"
SERVICE = "dbpool"
DBS = {"postgres": "pg", "mysql": "my"}  # kind -> the name components use
TIMEOUT = 120.0  # guards against hangs only
SHORT_TIMEOUT = "3s"  # the `short` component's time limit


@pytest.fixture(scope="module")
def dbbench() -> Path:
    return dbbench_guest()


# ------------------------------------------------------------- outside views


async def pg_connect() -> asyncpg.Connection:
    return await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="test")


@contextlib.asynccontextmanager
async def mysql_connect() -> AsyncIterator[aiomysql.Connection]:
    conn = await aiomysql.connect(
        host="127.0.0.1", port=3306, user="root", password="", db="test", autocommit=True
    )
    try:
        yield conn
    finally:
        conn.close()


async def outside(kind: str, sql: str) -> list[tuple[Any, ...]]:
    """Run ``sql`` on a connection of its own (not the pool's) and return the rows."""
    if kind == "postgres":
        conn = await pg_connect()
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    async with mysql_connect() as my, my.cursor() as cur:
        await cur.execute(sql)
        return list(await cur.fetchall())


async def pg_backends(app: str) -> list[int]:
    """PostgreSQL backends opened with ``application_name = app``."""
    rows = await outside(
        "postgres", f"SELECT pid FROM pg_stat_activity WHERE application_name = '{app}'"
    )
    return [int(r[0]) for r in rows]


async def table_ids(kind: str, table: str) -> list[int]:
    return [int(r[0]) for r in await outside(kind, f"SELECT id FROM {table} ORDER BY id")]


async def eventually(cond: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``cond`` until it holds; the 30 s bound guards against hangs only."""
    async with asyncio.timeout(30):
        while True:
            if await cond():
                return
            await asyncio.sleep(0.02)


# ------------------------------------------------------------- the workload


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str
    facts: dict[str, str] = field(default_factory=dict)

    def check(self) -> Run:
        assert self.exit_code == 0, f"exit {self.exit_code}:\n{self.stdout}{self.stderr}"
        return self


@dataclass
class Stack:
    fabric: Fabric
    app: str  # application_name of the pools' connections
    table: str  # a fresh table (id int primary key, name varchar) in both databases
    lines: list[str]

    @property
    def workload(self) -> WorkloadRuntime:
        return self.fabric.workloads[WORKLOAD]

    async def run(self, *args: object, component: str = "bench") -> Run:
        async with asyncio.timeout(TIMEOUT):
            result = await self.workload.invoke(component, None, [str(a) for a in args])
        stdout = str(result["stdout"])
        facts = dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)
        return Run(int(result["exit_code"]), stdout, str(result["stderr"]), facts)

    async def query(self, kind: str, sql: str, *params: object) -> Run:
        return await self.run("query", PORT, DBS[kind], sql, json.dumps(list(params)))

    def stats(self) -> ServerStats:
        """The service statistics as published to ``fabric status``."""
        (service,) = self.fabric.status().workloads[0].services
        assert service.name == SERVICE and service.stats is not None
        return msgspec.convert(service.stats, ServerStats)

    def db(self, kind: str) -> DatabaseStats:
        return self.stats().databases[DBS[kind]]

    def guest_lines(self, component: str = "bench") -> list[str]:
        return [line for line in self.lines if line.startswith(f"[{WORKLOAD}/{component}#")]

    async def settled(self) -> ServerStats:
        """Wait until every client is gone and every lease is back; return the stats."""

        async def done() -> bool:
            s = self.stats()
            return s.clients_connected == 0 and all(d.in_use == 0 for d in s.databases.values())

        await eventually(done)
        return self.stats()


def db_settings(kind: str, app: str, max_size: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "user": "postgres" if kind == "postgres" else "root",
        "password": "" if kind == "mysql" else None,
        "database": "test",
        "min_size": 1,
        "max_size": max_size,
        "acquire_timeout": 60.0,
        "application_name": app,
    }


@contextlib.asynccontextmanager
async def stack(
    runtime: Runtime, wasm: Path, *, max_size: int = 5, extra: dict[str, Path] | None = None
) -> AsyncIterator[Stack]:
    """A workload with the dbpool service (databases pg and my) and the dbbench
    guest twice: ``bench`` (generous limits) and ``short`` (a 3 s timeout);
    ``extra`` adds components by name (generous limits)."""
    tag = uuid.uuid4().hex[:12]
    app, table = f"fabric-ct-{tag}", f"dbpool_ct_{tag}"
    ddl = f"CREATE TABLE {table} (id int PRIMARY KEY, name varchar(100))"
    await outside("postgres", ddl)
    await outside("mysql", ddl)
    databases = {
        name: {k: v for k, v in db_settings(kind, app, max_size).items() if v is not None}
        for kind, name in DBS.items()
    }
    raw = {
        "workloads": [
            {
                "name": WORKLOAD,
                "services": [
                    {
                        "name": SERVICE,
                        "native": "services.dbpool.service:DbPoolService",
                        "ports": [PORT],
                        "config": {"port": PORT, "databases": databases},
                    }
                ],
                "components": [
                    {"name": "bench", "wasm": str(wasm), "concurrency": 64, "timeout": "60s"},
                    {"name": "short", "wasm": str(wasm), "timeout": SHORT_TIMEOUT},
                    *(
                        {"name": name, "wasm": str(path), "timeout": "60s"}
                        for name, path in (extra or {}).items()
                    ),
                ],
            }
        ]
    }
    manifest = manifest_from_dict(raw, path="<dbpool-components>", base_dir=str(ROOT))
    lines: list[str] = []
    fabric = Fabric(manifest, runtime=runtime, emit=lines.append)
    try:
        async with asyncio.timeout(TIMEOUT):
            await fabric.start()
        try:
            st = Stack(fabric, app, table, lines)
            yield st
            await st.settled()  # leak check: every test leaves the pools whole
        finally:
            async with asyncio.timeout(TIMEOUT):
                await fabric.stop()
    finally:
        await outside("postgres", f"DROP TABLE IF EXISTS {table}")
        await outside("mysql", f"DROP TABLE IF EXISTS {table}")


@pytest.fixture
async def st(runtime: Runtime, dbbench: Path) -> AsyncIterator[Stack]:
    async with stack(runtime, dbbench) as s:
        yield s


def ph(kind: str, n: int) -> str:
    return f"${n}" if kind == "postgres" else "%s"


KINDS = pytest.mark.parametrize("kind", ["postgres", "mysql"])


# ------------------------------------------------------------- tests


async def test_components_borrow_from_both_pools(st: Stack) -> None:
    for kind in DBS:
        await outside(
            kind, f"INSERT INTO {st.table} VALUES (1, 'one'), (2, 'two'), (3, 'three'), (4, 'x')"
        )
    pg = await st.query(
        "postgres",
        f"SELECT id, name FROM {st.table} WHERE id >= $1 AND name <> $2 ORDER BY id",
        2,
        "x",
    )
    my = await st.query(
        "mysql",
        f"SELECT id, name FROM {st.table} WHERE id >= %s AND name <> %s ORDER BY id",
        2,
        "x",
    )
    for run in (pg.check(), my.check()):
        assert json.loads(run.facts["columns"]) == ["id", "name"]
        assert json.loads(run.facts["rows"]) == [[2, "two"], [3, "three"]]
    stats = await st.settled()
    assert stats.requests == {"query": 2}
    assert stats.errors == {}
    assert stats.clients_total == 2
    assert st.db("postgres").leases_served == 1
    assert st.db("mysql").leases_served == 1


@KINDS
async def test_a_database_error_reaches_the_component(st: Stack, kind: str) -> None:
    run = await st.query(kind, f"SELECT * FROM {st.table}_missing WHERE id = {ph(kind, 1)}", 1)
    assert run.exit_code == 1
    assert run.facts["code"] == "database_error"
    assert run.facts["error"] == ("42P01" if kind == "postgres" else "42S02")
    stats = await st.settled()
    assert stats.errors == {"database_error": 1}
    assert st.db(kind).statement_errors == 1


@KINDS
async def test_transaction_spans_requests_of_one_invocation(st: Stack, kind: str) -> None:
    db = DBS[kind]
    committed = (await st.run("txn", PORT, db, st.table, 1, 3, "commit")).check()
    assert committed.facts["count_inside"] == "3"
    assert committed.facts["ended"] == "commit"
    assert await table_ids(kind, st.table) == [1, 2, 3]

    rolled = (await st.run("txn", PORT, db, st.table, 10, 3, "rollback")).check()
    # Inside the transaction its own inserts were visible ...
    assert rolled.facts["count_inside"] == "3"
    assert rolled.facts["ended"] == "rollback"
    # ... and outside nothing of them remains.
    assert await table_ids(kind, st.table) == [1, 2, 3]

    stats = await st.settled()
    # Per invocation: begin, 3 inserts + 1 count, commit or rollback.
    assert stats.requests == {"begin": 2, "query": 8, "commit": 1, "rollback": 1}
    assert stats.transactions_open == 0
    assert stats.transactions_abandoned == 0
    # Outside a transaction nothing was leased: one lease per transaction.
    assert st.db(kind).leases_served == 2


SLOW_SELECT = {
    "postgres": "SELECT $1::int AS n FROM pg_sleep(0.05)",
    "mysql": "SELECT %s + 0 AS n FROM (SELECT SLEEP(0.05)) AS s",
}


@KINDS
async def test_fifty_concurrent_invocations_share_five_connections(st: Stack, kind: str) -> None:
    n = 50
    peak_server = 0  # PostgreSQL backends with the pool's application_name
    peak_pool = 0
    stop = asyncio.Event()

    async def watch() -> None:
        nonlocal peak_server, peak_pool
        conn = await pg_connect()
        try:
            while not stop.is_set():
                if kind == "postgres":
                    count = await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        st.app,
                    )
                    peak_server = max(peak_server, int(count))
                db = st.db(kind)
                peak_pool = max(peak_pool, db.size + db.opening, db.in_use)
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    watcher = asyncio.create_task(watch())
    try:
        runs = await asyncio.gather(*(st.query(kind, SLOW_SELECT[kind], i) for i in range(n)))
    finally:
        stop.set()
        await watcher
    for i, run in enumerate(runs):
        run.check()
        assert json.loads(run.facts["rows"]) == [[i]]
    assert 1 <= peak_pool <= 5
    if kind == "postgres":
        assert 1 <= peak_server <= 5
        assert len(await pg_backends(st.app)) <= 5

    stats = await st.settled()
    db = st.db(kind)
    assert db.in_use == 0
    assert db.max_size == 5
    assert db.size <= 5
    assert db.leases_served == n
    assert db.timeouts == 0
    assert stats.requests == {"query": n}
    assert stats.clients_total == n
    status = st.fabric.status().workloads[0].components
    bench = next(c for c in status if c.name == "bench")
    assert bench.invocations == n and bench.errors == 0


@KINDS
async def test_trap_mid_transaction_rolls_back_and_returns_the_lease(st: Stack, kind: str) -> None:
    with pytest.raises(GuestTrap):
        await st.run("txn-trap", PORT, DBS[kind], st.table, 7)
    err = "\n".join(st.guest_lines())
    assert "inserted=7" in err and "GuestCrash" in err
    stats = await st.settled()
    assert stats.transactions_open == 0
    assert stats.transactions_abandoned == 1
    assert stats.requests == {"begin": 1, "query": 1}
    assert await table_ids(kind, st.table) == []
    # The row lock went with the rollback: the same id commits at once.
    run = (await st.run("txn", PORT, DBS[kind], st.table, 7, 1, "commit")).check()
    assert run.facts["count_inside"] == "1"
    assert await table_ids(kind, st.table) == [7]
    await st.settled()


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
    assert "inserted=5" in "\n".join(st.guest_lines("short"))
    stats = await st.settled()
    assert stats.transactions_open == 0
    assert stats.transactions_abandoned == 1
    assert "commit" not in stats.requests
    assert await table_ids(kind, st.table) == []
    (await st.run("txn", PORT, DBS[kind], st.table, 5, 1, "commit")).check()
    assert await table_ids(kind, st.table) == [5]


async def test_connections_killed_under_load(st: Stack) -> None:
    n = 30
    sql = "SELECT $1::int AS n FROM pg_sleep(0.3)"
    batch = asyncio.gather(*(st.query("postgres", sql, i) for i in range(n)))

    async def busy() -> bool:
        rows = await outside(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity "
            f"WHERE application_name = '{st.app}' AND state = 'active'",
        )
        return int(rows[0][0]) > 0

    await eventually(busy)
    killed = await outside(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE application_name = '{st.app}'",
    )
    assert killed and all(ok for (ok,) in killed)
    runs = await batch

    failed = [r for r in runs if r.exit_code != 0]
    assert failed, "terminating every backend mid-query failed no invocation"
    for run in failed:
        # A clear error from the dbpool service, not a hang or a garbled reply.
        assert run.exit_code == 1, run.stdout + run.stderr
        assert run.facts["code"] == "connection_lost", run.stdout
        assert run.facts["message"]
    for i, run in enumerate(runs):
        if run.exit_code == 0:
            assert json.loads(run.facts["rows"]) == [[i]]

    # Later invocations get fresh connections and succeed.
    later = await asyncio.gather(*(st.query("postgres", sql, i) for i in range(10)))
    for i, run in enumerate(later):
        assert json.loads(run.check().facts["rows"]) == [[i]]

    stats = await st.settled()
    db = st.db("postgres")
    assert db.in_use == 0 and db.size <= 5
    assert len(await pg_backends(st.app)) <= 5
    assert db.errors >= len(failed)
    assert stats.requests == {"query": n + 10}
    assert stats.errors == {"connection_lost": len(failed)}
    assert stats.clients_total == n + 10


# ------------------------------------------------------------- the example


async def test_example_workload_orders(runtime: Runtime) -> None:
    manifest = load_manifest(ROOT / "examples" / "dbpool" / "fabric.toml")
    lines: list[str] = []
    fabric = Fabric(manifest, runtime=runtime, emit=lines.append)
    try:
        async with asyncio.timeout(600):  # the first run builds the component
            await fabric.start()
        try:
            shop = fabric.workloads["shop"]
            async with asyncio.timeout(TIMEOUT):
                added = await shop.invoke("orders", "run", ["add", "widget", "3"])
                listed = await shop.invoke("orders", "run", ["list"])
        finally:
            async with asyncio.timeout(TIMEOUT):
                await fabric.stop()
        assert added["exit_code"] == 0, added
        head, _, tail = added["stdout"].strip().partition(": ")
        assert head.startswith("order ") and tail.startswith("3 x widget (total widget: ")
        order_id = int(head.removeprefix("order "))
        assert listed["exit_code"] == 0, listed
        assert f"{order_id}\twidget\t3" in listed["stdout"].splitlines()

        orders = await outside(
            "postgres", f"SELECT item, qty FROM fabric_orders WHERE id = {order_id}"
        )
        assert orders == [("widget", 3)]
        audit = await outside(
            "mysql", f"SELECT line FROM fabric_audit WHERE line = 'order {order_id}: 3 x widget'"
        )
        assert len(audit) == 1
    finally:
        await outside("postgres", "DROP TABLE IF EXISTS fabric_orders")
        await outside("mysql", "DROP TABLE IF EXISTS fabric_audit")
