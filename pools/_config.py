"""Configuration and result structures (msgspec Structs, frozen)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec

__all__ = [
    "DatabaseConfig",
    "PoolStats",
    "QueryResult",
    "RowSink",
    "StreamResult",
    "tag_count",
]

_DEFAULT_PORTS = {"postgres": 5432, "mysql": 3306}


class DatabaseConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where the database is and how the pool behaves. Times are in seconds."""

    kind: Literal["postgres", "mysql"]
    host: str = "127.0.0.1"
    port: int | None = None  # None: 5432 for postgres, 3306 for mysql
    user: str | None = None
    password: str | None = None
    database: str = "test"
    min_size: int = 1
    max_size: int = 10
    acquire_timeout: float = 30.0
    max_lifetime: float = 3600.0
    idle_timeout: float = 300.0
    health_check_after: float = 30.0
    connect_timeout: float = 10.0
    # Marker visible on the server: PostgreSQL application_name (pg_stat_activity),
    # MySQL/MariaDB connection attribute program_name.
    application_name: str | None = None
    # When a released lease's session is reset: "always" (after any statement),
    # or "after-transactions" (only when the lease opened a transaction or is
    # released inside one; plain autocommit statements skip the reset's round
    # trip, and session state they set, such as SET, stays on the connection).
    reset: Literal["always", "after-transactions"] = "always"

    def __post_init__(self) -> None:
        if self.kind not in _DEFAULT_PORTS:
            raise ValueError(f"kind must be 'postgres' or 'mysql', not {self.kind!r}")
        if self.reset not in ("always", "after-transactions"):
            raise ValueError(f"reset must be 'always' or 'after-transactions', not {self.reset!r}")
        if self.max_size < 1:
            raise ValueError(f"max_size must be at least 1, not {self.max_size}")
        if not 0 <= self.min_size <= self.max_size:
            raise ValueError(
                f"min_size must be between 0 and max_size ({self.max_size}), not {self.min_size}"
            )
        for name in (
            "acquire_timeout",
            "max_lifetime",
            "idle_timeout",
            "health_check_after",
            "connect_timeout",
        ):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")

    def shared(self, index: int, count: int) -> DatabaseConfig:
        """This pool's part when ``count`` processes share its sizes (part ``index``).

        ``max_size`` and ``min_size`` are totals: each part gets ``size //
        count``, and the first ``size % count`` parts one more, so the parts
        add up to the totals and no part's ``min_size`` exceeds its
        ``max_size``. A ``max_size`` below ``count`` is refused (``ValueError``):
        every part needs a connection.
        """
        if not 0 <= index < count:
            raise ValueError(f"part {index} of {count} does not exist")
        if self.max_size < count:
            raise ValueError(
                f"max_size {self.max_size} is the total across {count} workers, so it must "
                f"be at least {count} (one connection per worker)"
            )

        def part(total: int) -> int:
            base, extra = divmod(total, count)
            return base + (1 if index < extra else 0)

        return msgspec.structs.replace(
            self, max_size=part(self.max_size), min_size=part(self.min_size)
        )

    @property
    def resolved_port(self) -> int:
        """The port to connect to: ``port``, or the default port of ``kind``."""
        return self.port if self.port is not None else _DEFAULT_PORTS[self.kind]


def tag_count(tag: bytes | str | None, default: int) -> int:
    """Row count from a PostgreSQL command tag: 'SELECT 3', 'INSERT 0 1', 'UPDATE 2';
    ``default`` for a tag without one ('CREATE TABLE') or none at all."""
    if not tag:
        return default
    tail = tag.rsplit(None, 1)[-1]
    return int(tail) if tail.isdigit() else default


class QueryResult(msgspec.Struct, frozen=True):
    """Rows come back as native Python values from the driver."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    rowcount: int  # rows returned, or rows affected for INSERT/UPDATE/DELETE


class StreamResult(msgspec.Struct, frozen=True):
    """What `Lease.stream` returns once every chunk went to the sink."""

    columns: list[str]
    rowcount: int  # rows streamed, or rows affected for INSERT/UPDATE/DELETE


#: Receives a result chunk by chunk: ``await sink(columns, rows)``. It returns how
#: many rows it wants in the next chunk (None: as many as before). Raising stops
#: the statement; raise a `PoolError` (such as `ResultTooLarge`) to keep the
#: lease usable.
RowSink = Callable[[list[str], list[tuple[Any, ...]]], Awaitable[int | None]]


class PoolStats(msgspec.Struct, frozen=True):
    """A snapshot of a pool (see docs/pools.md for what each counter means)."""

    kind: str
    size: int  # open connections: idle + in_use
    idle: int
    in_use: int
    waiting: int  # acquire() calls queued for a connection
    acquire_wait_p50_ms: float  # over the last 1024 served acquires
    acquire_wait_p99_ms: float
    leases_served: int
    timeouts: int  # acquire() calls that raised AcquireTimeout
    errors: int  # connection failures: connect, lost mid-lease, health check, reset
    connections_opened: int
    connections_closed: int
    opening: int = 0  # connections being opened right now
    min_size: int = 0
    max_size: int = 0
    statement_errors: int = 0  # DatabaseError raised to lease holders
