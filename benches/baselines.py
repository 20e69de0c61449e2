"""The built-in scenarios and the baseline contenders fabric is compared with.

PostgreSQL (``pg-select1``), against the suite's private scram cluster:

* ``pg-direct-scram`` — what a short-lived invocation does without a pooler:
  ``asyncpg.connect`` with a password, ``SELECT 1``, close. The baseline.
* ``pg-asyncpg-pool`` — an in-process ``asyncpg`` pool of 20 connections:
  acquire, ``SELECT 1``, release. The floor: no new connection, no extra hop.
* ``pg-pgbouncer-tx`` — connect per invocation through a private PgBouncer in
  transaction mode (as serverless clients do), ``SELECT 1``, close.

MariaDB (``mysql-select1``), against the machine's server with a password:
``mysql-direct`` (connect per invocation with aiomysql, the baseline) and
``mysql-aiomysql-pool`` (in-process pool of 20).

Loopback TCP (``loopback-rtt``, ``loopback-bulk``): a uvloop client and a
uvloop echo server in the same process over kernel loopback; a 1-byte round
trip per operation, and 1 MiB echoed per operation (MB/s).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from benches.errors import BenchError
from benches.registry import Registry

if TYPE_CHECKING:
    from benches.env import BenchEnv, MysqlTarget, PgTarget

__all__ = [
    "EchoBulk",
    "EchoRoundTrip",
    "MysqlDirect",
    "MysqlPool",
    "PgAsyncpgPool",
    "PgBouncerConnect",
    "PgDirect",
    "register",
]

POOL_SIZE = 20
BULK_BYTES = 1 << 20


def _check_one(value: object) -> None:
    if value != 1:
        raise BenchError(f"SELECT 1 returned {value!r}")


# --------------------------------------------------------------- PostgreSQL


class PgDirect:
    """Connect with a password (scram-sha-256), ``SELECT 1``, close."""

    name = "pg-direct-scram"
    group = "postgres"
    description = "asyncpg.connect per invocation (scram-sha-256 password) + SELECT 1 + close"

    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.target: PgTarget | None = None
        self.connect_kwargs: dict[str, Any] = {}

    async def _target(self) -> PgTarget:
        return await self.env.postgres()

    async def setup(self) -> None:
        self.target = await self._target()

    async def op(self) -> None:
        import asyncpg

        assert self.target is not None
        t = self.target
        conn = await asyncpg.connect(
            host=t.host,
            port=t.port,
            user=t.user,
            password=t.password,
            database=t.database,
            **self.connect_kwargs,
        )
        try:
            _check_one(await conn.fetchval("SELECT 1"))
        finally:
            await conn.close()

    async def teardown(self) -> None:
        self.target = None


class PgBouncerConnect(PgDirect):
    """Connect through PgBouncer (transaction mode, scram), ``SELECT 1``, close."""

    name = "pg-pgbouncer-tx"
    description = (
        "asyncpg.connect per invocation through PgBouncer (transaction mode, scram-sha-256, "
        f"pool {POOL_SIZE}) + SELECT 1 + close"
    )

    def __init__(self, env: BenchEnv) -> None:
        super().__init__(env)
        # Named prepared statements do not survive transaction pooling (PgBouncer < 1.21).
        self.connect_kwargs = {"statement_cache_size": 0}

    async def _target(self) -> PgTarget:
        return await self.env.pgbouncer()


class PgAsyncpgPool:
    """Acquire from an in-process asyncpg pool, ``SELECT 1``, release."""

    name = "pg-asyncpg-pool"
    group = "postgres"
    description = f"in-process asyncpg pool ({POOL_SIZE} connections): acquire + SELECT 1 + release"

    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.pool: Any = None

    async def setup(self) -> None:
        import asyncpg

        t = await self.env.postgres()
        self.pool = await asyncpg.create_pool(
            host=t.host,
            port=t.port,
            user=t.user,
            password=t.password,
            database=t.database,
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
        )

    async def op(self) -> None:
        async with self.pool.acquire() as conn:
            _check_one(await conn.fetchval("SELECT 1"))

    async def teardown(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None


# ------------------------------------------------------------------ MariaDB


class MysqlDirect:
    """Connect with a password (aiomysql), ``SELECT 1``, quit."""

    name = "mysql-direct"
    group = "mariadb"
    description = "aiomysql.connect per invocation (password) + SELECT 1 + COM_QUIT"

    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.target: MysqlTarget | None = None
        self.max_concurrency: int | None = None

    async def setup(self) -> None:
        self.target = await self.env.mariadb()
        # Leave room for the pool contender and for other clients of the server.
        self.max_concurrency = max(1, self.target.max_connections - 2 * POOL_SIZE - 10)

    async def op(self) -> None:
        import aiomysql

        assert self.target is not None
        t = self.target
        conn = await aiomysql.connect(
            host=t.host, port=t.port, user=t.user, password=t.password, db=t.database
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1")
                (value,) = await cur.fetchone()
            _check_one(value)
        finally:
            try:
                await conn.ensure_closed()
            except Exception:
                conn.close()

    async def teardown(self) -> None:
        self.target = None


class MysqlPool:
    """Acquire from an in-process aiomysql pool, ``SELECT 1``, release."""

    name = "mysql-aiomysql-pool"
    group = "mariadb"
    description = (
        f"in-process aiomysql pool ({POOL_SIZE} connections): acquire + SELECT 1 + release"
    )

    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.pool: Any = None

    async def setup(self) -> None:
        import aiomysql

        t = await self.env.mariadb()
        self.pool = await aiomysql.create_pool(
            host=t.host,
            port=t.port,
            user=t.user,
            password=t.password,
            db=t.database,
            minsize=POOL_SIZE,
            maxsize=POOL_SIZE,
            autocommit=True,
        )

    async def op(self) -> None:
        async with self.pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT 1")
            (value,) = await cur.fetchone()
        _check_one(value)

    async def teardown(self) -> None:
        if self.pool is not None:
            self.pool.close()
            await self.pool.wait_closed()
            self.pool = None


# ----------------------------------------------------------------- loopback


class _EchoClient:
    """Keeps one connection per concurrent worker to the echo server."""

    group = "loopback"

    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.address: tuple[str, int] | None = None
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: set[asyncio.StreamWriter] = set()

    async def setup(self) -> None:
        self.address = await self.env.echo_server()

    async def _borrow(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._idle:
            return self._idle.pop()
        assert self.address is not None
        reader, writer = await asyncio.open_connection(*self.address, limit=1 << 20)
        self._all.add(writer)
        return reader, writer

    async def _exchange(self, payload: bytes) -> None:
        reader, writer = await self._borrow()
        try:
            writer.write(payload)
            data = await reader.readexactly(len(payload))
            await writer.drain()
        except BaseException:
            self._all.discard(writer)
            writer.close()
            raise
        if len(data) != len(payload):
            raise BenchError("short echo")
        self._idle.append((reader, writer))

    async def teardown(self) -> None:
        writers = list(self._all)
        self._all.clear()
        self._idle.clear()
        for writer in writers:
            writer.close()
        for writer in writers:
            try:
                await writer.wait_closed()
            except OSError:
                pass


class EchoRoundTrip(_EchoClient):
    name = "tcp-loopback"
    description = "1-byte request/response over kernel loopback TCP, uvloop client and server"

    async def op(self) -> None:
        await self._exchange(b"x")


class EchoBulk(_EchoClient):
    name = "tcp-loopback-bulk"
    description = "1 MiB echoed over kernel loopback TCP per op, uvloop client and server"
    bytes_per_op = BULK_BYTES
    _payload = bytes(range(256)) * (BULK_BYTES // 256)

    async def op(self) -> None:
        await self._exchange(self._payload)


# ----------------------------------------------------------------- scenarios


def register(registry: Registry) -> None:
    """Add the built-in scenarios with their baseline contenders."""
    registry.add_scenario(
        "pg-select1",
        title="PostgreSQL: SELECT 1 per invocation",
        description=(
            "One invocation runs SELECT 1 against a private PostgreSQL cluster that "
            "requires scram-sha-256 passwords. Compares connecting per invocation "
            "(directly and through PgBouncer in transaction mode) with borrowing "
            "from a warm in-process pool."
        ),
        baseline=PgDirect.name,
    )
    for factory in (PgDirect, PgAsyncpgPool, PgBouncerConnect):
        registry.add_contender("pg-select1", factory)

    registry.add_scenario(
        "mysql-select1",
        title="MariaDB: SELECT 1 per invocation",
        description=(
            "One invocation runs SELECT 1 against the machine's MariaDB as a user with "
            "a password: connecting per invocation vs a warm in-process pool."
        ),
        baseline=MysqlDirect.name,
    )
    for mfactory in (MysqlDirect, MysqlPool):
        registry.add_contender("mysql-select1", mfactory)

    registry.add_scenario(
        "loopback-rtt",
        title="Loopback: 1-byte round trip",
        description=(
            "Write one byte, read it back, over kernel loopback TCP between a uvloop "
            "client and a uvloop echo server in the same process; one connection per worker."
        ),
        baseline=EchoRoundTrip.name,
    )
    registry.add_contender("loopback-rtt", EchoRoundTrip)

    registry.add_scenario(
        "loopback-bulk",
        title="Loopback: bulk echo, 1 MiB per op",
        description=(
            "Write 1 MiB and read it back over kernel loopback TCP (same process, uvloop); "
            "MB/s counts payload bytes once."
        ),
        baseline=EchoBulk.name,
        max_concurrency=64,
    )
    registry.add_contender("loopback-bulk", EchoBulk)
