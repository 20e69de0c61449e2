"""The dbpool service with its PostgreSQL front door on a workload's virtual port,
published on a host port by an ingress rule; the machine's real PostgreSQL behind it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from fabric.net import IngressRule, NetworkPolicy, VirtualNetwork
from pools import DatabaseConfig
from services.dbpool.messages import Limits, PostgresFrontDoorStats
from services.dbpool.pgdoor import PostgresFrontDoorConfig, PostgresUser
from services.dbpool.service import DbPoolConfig, DbPoolService

PASSWORD = "fr0nt-d00r pässword"
PASSWORD_ENV = "FABRIC_TEST_PGDOOR_PASSWORD"
DOOR_PORT = 6432


async def eventually(cond: Callable[[], bool]) -> None:
    """Wait until ``cond()`` holds; the 10 s bound guards against hangs only."""
    deadline = time.monotonic() + 10.0
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


@dataclass
class Door:
    service: DbPoolService
    port: int  # the ingress's host port
    database: str
    table: str

    def stats(self) -> PostgresFrontDoorStats:
        stats = self.service.statistics().postgres
        assert stats is not None
        return stats

    def pool(self) -> Any:
        return self.stats().databases[self.database]

    async def connect(self, user: str = "app", **kw: Any) -> asyncpg.Connection:
        kw.setdefault("password", PASSWORD if user == "app" else None)
        return await asyncpg.connect(
            host="127.0.0.1", port=self.port, user=user, database=self.database, **kw
        )

    async def settled(self) -> None:
        """Every client gone and every server session back in its pool."""
        await eventually(lambda: self.stats().clients_connected == 0 and self.pool().in_use == 0)


@contextlib.asynccontextmanager
async def front_door(
    database: str = "test",
    *,
    limits: Limits | None = None,
    door_options: dict[str, Any] | None = None,
    **pool: Any,
) -> AsyncIterator[Door]:
    os.environ[PASSWORD_ENV] = PASSWORD
    pool.setdefault("min_size", 1)
    pool.setdefault("max_size", 4)
    pool.setdefault("acquire_timeout", 10.0)
    db = DatabaseConfig(kind="postgres", user="postgres", database=database, **pool)
    users = {
        "app": PostgresUser(password_env=PASSWORD_ENV),
        "ops": PostgresUser(auth="trust", admin=True),
        "tool": PostgresUser(auth="trust"),
    }
    config = DbPoolConfig(
        port=7432,
        databases={database: db},
        limits=limits or Limits(),
        postgres=PostgresFrontDoorConfig(port=DOOR_PORT, users=users, **(door_options or {})),
    )
    net = VirtualNetwork(
        "pgdoor-test", NetworkPolicy(ingress=(IngressRule(port=DOOR_PORT, max_connections=64),))
    )

    async def start_server(handler: Any, /, *, host: str, port: int) -> Any:
        return await net.start_server(handler, port, host=host)

    service = DbPoolService(config, start_server)
    await service.start()
    table = f"pgdoor_{uuid.uuid4().hex[:10]}"
    try:
        (ingress,) = await net.start_ingress()
        yield Door(service, ingress.port, database, table)
    finally:
        await service.close()
        await net.aclose()
        conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database=database)
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


@pytest.fixture
async def door() -> AsyncIterator[Door]:
    async with front_door() as d:
        yield d


@pytest.fixture
async def scratch_database() -> AsyncIterator[str]:
    """A database of its own (pgbench -i creates fixed table names)."""
    name = f"pgdoor_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="test")
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
