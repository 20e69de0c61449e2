"""Fixtures for the pool tests: real PostgreSQL and MariaDB, asyncio and uvloop.

Each database test gets a ``Target``: a config factory whose connections carry a marker
the server shows (PostgreSQL ``application_name``; MariaDB: a database created for the
test, visible in the processlist ``DB`` column), plus admin helpers that count and kill
those sessions over a separate, direct connection.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiomysql
import asyncpg
import pytest
import uvloop

# pytest (prepend import mode) puts tests/ on sys.path, where tests/pools looks like a
# namespace package called ``pools``. A regular package anywhere on sys.path wins over
# namespace portions, so make sure the repository root is on it.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)
if "pools" in sys.modules and getattr(sys.modules["pools"], "__file__", None) is None:
    del sys.modules["pools"]

from pools import DatabaseConfig, Pool  # noqa: E402

PG: dict[str, Any] = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "test"}
MY: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 3306,
    "user": "root",
    "password": "",
    "database": "test",
}
KINDS = ["postgres", "mysql"]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def loop_guard() -> AsyncIterator[list[dict[str, Any]]]:
    """Fail the test if anything reaches the loop's exception handler."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert not seen, seen


class Target:
    """One database kind, a marker for this test's sessions, and admin helpers."""

    def __init__(self, kind: str, marker: str) -> None:
        self.kind = kind
        self.marker = marker
        self.pools: list[Pool] = []
        self._pg: asyncpg.Connection | None = None
        self._my: Any = None

    # -- SQL dialect -------------------------------------------------------------------
    def ph(self, n: int) -> str:
        """The n-th placeholder (1-based)."""
        return f"${n}" if self.kind == "postgres" else "%s"

    def sleep_sql(self, seconds: float) -> str:
        return (
            f"SELECT pg_sleep({seconds})" if self.kind == "postgres" else f"SELECT SLEEP({seconds})"
        )

    def table(self) -> str:
        return f"pools_t_{uuid.uuid4().hex[:10]}"

    # -- pools -------------------------------------------------------------------------
    def config(self, **overrides: Any) -> DatabaseConfig:
        base: dict[str, Any] = dict(PG if self.kind == "postgres" else MY)
        if self.kind == "postgres":
            base["application_name"] = self.marker
        else:
            base["database"] = self.marker
            base["application_name"] = self.marker
        base.update(overrides)
        return DatabaseConfig(kind=self.kind, **base)  # type: ignore[arg-type]

    def track(self, pool: Pool) -> Pool:
        self.pools.append(pool)
        return pool

    # -- admin side --------------------------------------------------------------------
    async def open(self) -> None:
        if self.kind == "postgres":
            self._pg = await asyncpg.connect(**PG)
        else:
            self._my = await aiomysql.connect(
                host=MY["host"],
                port=MY["port"],
                user=MY["user"],
                password="",
                db="test",
                autocommit=True,
            )
            await self._my_exec(f"CREATE DATABASE `{self.marker}`")

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._my is not None:
            await self._my_exec(f"DROP DATABASE IF EXISTS `{self.marker}`")
            await self._my.ensure_closed()

    async def _my_exec(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        async with self._my.cursor() as cur:
            await cur.execute(sql, args or None)
            return list(await cur.fetchall())

    async def session_ids(self) -> set[int]:
        """Server-side ids of the sessions carrying this test's marker."""
        if self.kind == "postgres":
            assert self._pg is not None
            records = await self._pg.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1", self.marker
            )
            return {r["pid"] for r in records}
        rows = await self._my_exec(
            "SELECT id FROM information_schema.processlist WHERE db = %s", self.marker
        )
        return {int(r[0]) for r in rows}

    async def busy_ids(self) -> set[int]:
        """Sessions of this test currently running a statement."""
        if self.kind == "postgres":
            assert self._pg is not None
            records = await self._pg.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'",
                self.marker,
            )
            return {r["pid"] for r in records}
        rows = await self._my_exec(
            "SELECT id FROM information_schema.processlist WHERE db = %s AND command = 'Query'",
            self.marker,
        )
        return {int(r[0]) for r in rows}

    async def kill(self, ids: set[int]) -> None:
        """Kill sessions and wait until the server no longer lists them."""
        for sid in ids:
            if self.kind == "postgres":
                assert self._pg is not None
                await self._pg.fetchval("SELECT pg_terminate_backend($1, 5000)", sid)
            else:
                try:
                    await self._my_exec(f"KILL {int(sid)}")
                except aiomysql.OperationalError:  # already gone
                    pass
        await wait_for(lambda: self._gone(ids), what=f"sessions {ids} to disappear")

    async def _gone(self, ids: set[int]) -> bool:
        return not (ids & await self.session_ids())

    wait_for = staticmethod(lambda *a, **k: wait_for(*a, **k))


class Proxy:
    """A TCP proxy in front of a database that can cut every connection and refuse new
    ones: a database restart or a network cut, on demand, without touching the server."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.refuse = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._stalled: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if writer in self._stalled:
                    continue  # black hole: swallowed, no reset, no FIN
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    def stall(self) -> None:
        """Silently drop all traffic on the current connections (a partition without
        resets); new connections still work."""
        self._stalled |= self._writers

    def cut(self) -> None:
        """Drop every proxied connection, both ways."""
        for writer in list(self._writers):
            writer.transport.abort()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()


async def wait_for(
    condition: Callable[[], Any], *, what: str, limit: float = 10.0, interval: float = 0.02
) -> None:
    """Poll ``condition`` (sync or async) until true; ``limit`` only prevents hangs."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


@pytest.fixture(params=KINDS)
async def target(request: pytest.FixtureRequest, loop_guard: Any) -> AsyncIterator[Target]:
    kind = request.param
    t = Target(kind, f"fabric_pools_{uuid.uuid4().hex[:12]}")
    await t.open()
    try:
        yield t
        for pool in t.pools:  # nothing may leak out of a test
            stats = pool.statistics()
            assert stats.in_use == 0, pool
            assert stats.waiting == 0, pool
            assert stats.connections_opened - stats.connections_closed == stats.size, stats
            await pool.close(timeout=5)
        await wait_for(lambda: _no_sessions(t), what="the pool's sessions to close")
    finally:
        for pool in t.pools:
            pool.terminate()
        await t.close()


async def _no_sessions(t: Target) -> bool:
    return not await t.session_ids()


@pytest.fixture
async def proxy(target: Target) -> AsyncIterator[Proxy]:
    """A fault-injection proxy in front of the target database (``proxy.port``)."""
    p = Proxy(target.config().resolved_port)
    await p.start()
    try:
        yield p
    finally:
        await p.close()
