"""Fixtures: real PostgreSQL / MariaDB pools behind a DbPoolServer on real TCP."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from pools import DatabaseConfig, create_pool
from services.dbpool.messages import Limits
from services.dbpool.service import DbPoolConfig, DbPoolService

KINDS = ["postgres", "mysql"]


def db_config(kind: str, **overrides: object) -> DatabaseConfig:
    base: dict[str, object] = {
        "kind": kind,
        "user": "postgres" if kind == "postgres" else "root",
        "password": None if kind == "postgres" else "",
        "database": "test",
        "min_size": 1,
        "max_size": 5,
        "acquire_timeout": 10.0,
    }
    base.update(overrides)
    return DatabaseConfig(**base)  # type: ignore[arg-type]


def ph(kind: str, n: int) -> str:
    """The n-th placeholder (1-based) in the database's native style."""
    return f"${n}" if kind == "postgres" else "%s"


async def eventually(cond: Callable[[], bool]) -> None:
    """Wait until ``cond()`` holds; the 10 s bound guards against hangs only."""
    deadline = time.monotonic() + 10.0
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


@dataclass
class Env:
    kind: str
    service: DbPoolService
    table: str

    @property
    def port(self) -> int:
        return self.service.port

    def ph(self, n: int) -> str:
        return ph(self.kind, n)

    def in_use(self) -> int:
        return self.service.statistics().databases["main"].in_use

    async def settled(self) -> None:
        """Every client gone and every lease back in its pool."""
        await self.service.settled()

        def done() -> bool:
            s = self.service.statistics()
            return s.clients_connected == 0 and all(d.in_use == 0 for d in s.databases.values())

        await eventually(done)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def make_env(
    kind: str, *, limits: Limits | None = None, **pool_overrides: object
) -> AsyncIterator[Env]:
    """A service with database "main" (and "other", the same server) plus a fresh table."""
    table = f"dbpool_{uuid.uuid4().hex[:12]}"
    admin = create_pool(db_config(kind, min_size=0, max_size=1))
    await admin.start()
    async with admin.lease() as lease:
        await lease.query(f"CREATE TABLE {table} (id int primary key, name varchar(100))")
    config = DbPoolConfig(
        port=0,
        databases={
            "main": db_config(kind, **pool_overrides),
            "other": db_config(kind, min_size=0, max_size=2),
        },
        limits=limits or Limits(),
    )
    service = DbPoolService(config)
    await service.start()
    env = Env(kind, service, table)
    try:
        yield env
        await env.settled()  # leak check: every test leaves the pools whole
    finally:
        await service.close()
        async with admin.lease() as lease:
            await lease.query(f"DROP TABLE IF EXISTS {table}")
        await admin.close()


@pytest.fixture
async def env(kind: str) -> AsyncIterator[Env]:
    async with make_env(kind) as e:
        yield e


@pytest.fixture
async def pg_env() -> AsyncIterator[Env]:
    async with make_env("postgres") as e:
        yield e


@pytest.fixture
async def mysql_env() -> AsyncIterator[Env]:
    async with make_env("mysql") as e:
        yield e
