"""Leased connections to PostgreSQL (asyncpg) and MySQL/MariaDB (aiomysql).

One interface over both drivers: acquire with a timeout, release with a session reset,
transactions pinned to a lease, connection lifetime and idle timeout, health checks,
and statistics. See ``docs/pools.md``.

    pool = create_pool(DatabaseConfig(kind="postgres", user="postgres"))
    await pool.start()
    async with pool.lease() as lease:
        result = await lease.query("SELECT $1::int AS n", [1])
    await pool.close()
"""

from __future__ import annotations

from ._config import DatabaseConfig, PoolStats, QueryResult
from ._errors import (
    AcquireTimeout,
    ConnectFailed,
    ConnectionLost,
    DatabaseError,
    LeaseReleased,
    PoolClosed,
    PoolError,
    ResultTooLarge,
)
from ._lease import Lease
from ._mysql import MySQLLease, MySQLPool
from ._pgwire import PgConnection, PgServerError, PgWireLease, PgWirePool, send_cancel
from ._pool import Pool
from ._postgres import PostgresLease, PostgresPool
from ._state import Plan, PoolState, Slot, Waiter

__all__ = [
    "AcquireTimeout",
    "ConnectFailed",
    "ConnectionLost",
    "DatabaseConfig",
    "DatabaseError",
    "Lease",
    "LeaseReleased",
    "MySQLLease",
    "MySQLPool",
    "PgConnection",
    "PgServerError",
    "PgWireLease",
    "PgWirePool",
    "Plan",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolState",
    "PoolStats",
    "PostgresLease",
    "PostgresPool",
    "QueryResult",
    "ResultTooLarge",
    "Slot",
    "Waiter",
    "create_pool",
    "send_cancel",
]


def create_pool(config: DatabaseConfig) -> Pool:
    """A pool for ``config.kind``; call ``await pool.start()`` to open ``min_size``
    connections up front (optional) and ``await pool.close()`` when done."""
    if config.kind == "postgres":
        return PostgresPool(config)
    if config.kind == "mysql":
        return MySQLPool(config)
    raise ValueError(f"unknown database kind {config.kind!r}")  # pragma: no cover
