"""fabric.postgres: throwaway clusters with real passwords, against real servers."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from fabric.postgres import (
    ClusterStateError,
    TempCluster,
    find_or_start_postgres,
    find_pg_binaries,
    free_port,
    make_dsn,
    probe_postgres,
)

PASSWORD = "sup3r'secret\"pw"


@pytest.fixture(scope="module")
def cluster() -> Iterator[TempCluster]:
    with TempCluster(password=PASSWORD) as c:
        c.create_role("alice", "alice-pw")
        c.create_database("shop", owner="alice")
        yield c


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


async def test_role_connects_with_its_password(cluster: TempCluster) -> None:
    conn = await asyncpg.connect(
        host=cluster.host, port=cluster.port, user="alice", password="alice-pw", database="shop"
    )
    try:
        who = await conn.fetchrow("SELECT current_user AS u, current_database() AS d")
        assert (who["u"], who["d"]) == ("alice", "shop")
    finally:
        await conn.close()


async def test_superuser_dsn_works(cluster: TempCluster) -> None:
    conn = await asyncpg.connect(cluster.dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        method = await conn.fetchval("SHOW password_encryption")
        assert method == "scram-sha-256"
    finally:
        await conn.close()


async def test_wrong_or_missing_password_is_rejected(cluster: TempCluster) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(
            host=cluster.host, port=cluster.port, user="alice", password="nope", database="shop"
        )
    with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.ClientCannotConnectError)):
        await asyncpg.connect(
            host=cluster.host, port=cluster.port, user="alice", password="", database="shop"
        )


async def test_restart_keeps_data_and_accepts_connections(cluster: TempCluster) -> None:
    dsn = cluster.dsn_for("alice", "alice-pw", "shop")
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE IF NOT EXISTS kept (v int); INSERT INTO kept VALUES (42)")
    await conn.close()
    old_pid = cluster.pid
    await asyncio.to_thread(cluster.restart)
    assert cluster.pid != old_pid
    assert cluster.statistics().restarts >= 1
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT max(v) FROM kept") == 42
    finally:
        await conn.close()


def test_sql_quoting_of_names_and_passwords(cluster: TempCluster) -> None:
    cluster.create_role('we"ird; role', "it's a pw")
    rows = cluster.run_sql("SELECT rolname FROM pg_roles WHERE rolname LIKE 'we%'")
    assert rows == 'we"ird; role'


def test_statistics_and_repr(cluster: TempCluster) -> None:
    stats = cluster.statistics()
    assert stats.state == "running"
    assert stats.port == cluster.port
    assert stats.pid is not None and _pid_alive(stats.pid)
    assert stats.auth == "scram-sha-256"
    assert f"127.0.0.1:{cluster.port}" in repr(cluster)
    assert (cluster.socket_dir / f".s.PGSQL.{cluster.port}").exists()
    with pytest.raises(ClusterStateError):
        cluster.start()


async def test_stop_cleans_up_and_trust_mode_needs_no_password() -> None:
    cluster = TempCluster(auth="trust", password="unused-pw")
    await asyncio.to_thread(cluster.start)
    base, port, pid = cluster.base_dir, cluster.port, cluster.pid
    assert pid is not None and base.is_dir()
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres")
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()

    await asyncio.to_thread(cluster.stop)
    assert cluster.state == "stopped"
    assert not base.exists()
    assert not _pid_alive(pid)
    assert not probe_postgres("127.0.0.1", port, timeout=0.5)
    with pytest.raises(ClusterStateError):
        cluster.run_sql("SELECT 1")
    cluster.stop()  # idempotent


def test_probe_does_not_mistake_other_servers_for_postgres() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert not probe_postgres("127.0.0.1", port, timeout=0.5)
    assert not probe_postgres("127.0.0.1", port, timeout=0.5)


def test_make_dsn_quotes() -> None:
    assert make_dsn("h", 1, "u@x", "p:/w", "d b") == "postgresql://u%40x:p%3A%2Fw@h:1/d%20b"
    assert make_dsn("h", 1, "u", None, "d") == "postgresql://u@h:1/d"


def test_uses_machine_server_when_reachable() -> None:
    if not probe_postgres("127.0.0.1", 5432):
        pytest.fail("the machine's PostgreSQL at 127.0.0.1:5432 is down (see the common brief)")
    with find_or_start_postgres(5432, database="test") as endpoint:
        assert endpoint.source == "existing"
        assert not endpoint.embedded
        assert endpoint.dsn == "postgresql://postgres@127.0.0.1:5432/test"
    assert probe_postgres("127.0.0.1", 5432)  # closing left the machine's server alone


async def test_fallback_starts_a_server_on_an_unused_port() -> None:
    port = free_port()
    endpoint = await asyncio.to_thread(find_or_start_postgres, port, database="demo")
    try:
        assert endpoint.embedded and endpoint.port == port  # the port it was pointed at
        assert endpoint.source == find_pg_binaries().source
        conn = await asyncpg.connect(endpoint.dsn)
        try:
            assert await conn.fetchval("SELECT current_database()") == "demo"
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(endpoint.close)
    assert not probe_postgres("127.0.0.1", port, timeout=0.5)


def test_fallback_moves_to_a_free_port_when_the_port_is_taken_by_something_else() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        taken = server.getsockname()[1]
        with find_or_start_postgres(taken) as endpoint:
            assert endpoint.embedded
            assert endpoint.port != taken
            assert probe_postgres("127.0.0.1", endpoint.port)


async def test_pgserver_binaries_when_installed() -> None:
    pytest.importorskip("pgserver", reason="pgserver (optional) is not installed")
    port = free_port()
    endpoint = await asyncio.to_thread(find_or_start_postgres, port, embedded="pgserver")
    try:
        assert endpoint.source == "pgserver"
        conn = await asyncpg.connect(endpoint.dsn)
        try:
            assert (await conn.fetchval("SHOW server_version")).startswith("16.")
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(endpoint.close)
