"""SQL text with a NUL byte is refused before it reaches the database connection."""

from __future__ import annotations

import pytest

from pools import DatabaseError, create_pool

from .conftest import Target


async def test_nul_in_sql_is_refused_and_the_connection_survives(target: Target) -> None:
    pool = target.track(create_pool(target.config(min_size=1, max_size=1)))
    backend = "SELECT pg_backend_pid()" if target.kind == "postgres" else "SELECT CONNECTION_ID()"
    async with pool.lease() as lease:
        (before,) = (await lease.query(backend)).rows[0]
        for attempt in (
            lease.query("SELECT 1\x00; SELECT 2"),
            lease.execute_many("SELECT \x00", [[1]]),
            lease.execute_many("SELECT \x00", []),
        ):
            with pytest.raises(DatabaseError) as info:
                await attempt
            assert info.value.code == "client"
            assert info.value.message == (
                "SQL text contains a NUL byte (refused before reaching the database)"
            )
        assert lease.usable
        (after,) = (await lease.query(backend)).rows[0]
    assert after == before  # the same database session: nothing was churned
    assert pool.statistics().size == 1
