"""benches.pgbouncer: a private PgBouncer (transaction mode, scram) in front of a TempCluster."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from benches.errors import PgBouncerNotInstalled
from benches.pgbouncer import PgBouncer, find_pgbouncer, require_pgbouncer
from fabric.postgres import TempCluster, probe_postgres

ROLE, PASSWORD, DB = "app", "app-password", "appdb"


@pytest.fixture(scope="module")
def cluster() -> Iterator[TempCluster]:
    if find_pgbouncer() is None:
        # ./dev installs Debian's pgbouncer where it can (root with apt-get).
        pytest.skip("pgbouncer not installed, and ./dev could not install it here")
    with TempCluster(password="admin-pw") as c:
        c.create_role(ROLE, PASSWORD)
        c.create_database(DB, owner=ROLE)
        yield c


def _secret(cluster: TempCluster) -> str:
    return cluster.run_sql(
        "SELECT rolpassword FROM pg_authid WHERE rolname = :'name'", variables={"name": ROLE}
    )


async def _connect(bouncer: PgBouncer, password: str = PASSWORD) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=bouncer.host,
        port=bouncer.port,
        user=ROLE,
        password=password,
        database=DB,
        statement_cache_size=0,
        timeout=20,
    )


@pytest.mark.parametrize("auth_entry", ["password", "scram-secret"])
async def test_scram_login_through_pgbouncer(cluster: TempCluster, auth_entry: str) -> None:
    entry = PASSWORD if auth_entry == "password" else _secret(cluster)
    assert entry.startswith("SCRAM-SHA-256$") or auth_entry == "password"
    bouncer = PgBouncer(server_host=cluster.host, server_port=cluster.port, users={ROLE: entry})
    await asyncio.to_thread(bouncer.start)
    try:
        assert bouncer.statistics().state == "running"
        assert bouncer.port != cluster.port
        conn = await _connect(bouncer)
        try:
            assert await conn.fetchval("SELECT current_user") == ROLE
        finally:
            await conn.close()
        with pytest.raises(asyncpg.PostgresError):
            await _connect(bouncer, password="wrong")
    finally:
        await asyncio.to_thread(bouncer.stop)
    assert bouncer.statistics().state == "stopped"
    assert not probe_postgres(bouncer.host, bouncer.port, timeout=0.5)


async def test_transaction_mode_shares_one_server_connection(cluster: TempCluster) -> None:
    # pool_size=1: in session mode the second client would wait for the first to leave.
    bouncer = PgBouncer(
        server_host=cluster.host,
        server_port=cluster.port,
        users={ROLE: PASSWORD},
        pool_size=1,
    )
    await asyncio.to_thread(bouncer.start)
    try:
        first = await _connect(bouncer)
        second = await _connect(bouncer)
        try:
            async with asyncio.timeout(20):
                assert await first.fetchval("SELECT 1") == 1
                assert await second.fetchval("SELECT 2") == 2
                pids = {await first.fetchval("SELECT pg_backend_pid()")}
                pids.add(await second.fetchval("SELECT pg_backend_pid()"))
            assert len(pids) == 1
        finally:
            await first.close()
            await second.close()
    finally:
        await asyncio.to_thread(bouncer.stop)


def test_missing_binary_says_so() -> None:
    with pytest.raises(PgBouncerNotInstalled, match="pgbouncer not installed"):
        require_pgbouncer("/nonexistent/pgbouncer")
    bouncer = PgBouncer(
        server_host="127.0.0.1", server_port=1, users={"u": "p"}, binary="/nonexistent/pgbouncer"
    )
    with pytest.raises(PgBouncerNotInstalled):
        bouncer.start()
    assert bouncer.statistics().state == "new"
