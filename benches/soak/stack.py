"""The system under test: throwaway databases and an in-process fabric running on them.

* PostgreSQL is a private :class:`~fabric.postgres.TempCluster` (through
  :class:`~benches.env.BenchEnv`), so restarting it and killing its backends
  disturbs nobody else.
* MariaDB is the machine's server (``127.0.0.1:3306`` unless
  ``FABRIC_BENCH_MYSQL_*`` say otherwise) with a login of the suite's own,
  ``fabric_soak``, so its backends can be killed without touching anyone
  else's. Without MariaDB the load runs on PostgreSQL alone.
* The fabric is one workload, ``soak``: the dbpool native service (databases
  ``pg`` and ``mysql``) published on a free host port through an ingress
  rule, and the ``dbbench`` guest as component ``app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from benches.env import BenchEnv, MysqlAdmin, PgTarget
from fabric.guests import DBPOOL_SERVICE, dbbench
from fabric.postgres import TempCluster, free_port
from fabric.runtime import Runtime
from fabric.workload import manifest_from_dict
from fabric.workload.runtime import Fabric, WorkloadRuntime

__all__ = ["DBPOOL_PORT", "SOAK_USER", "WORKLOAD", "Stack", "count_rows"]

ROOT = Path(__file__).resolve().parents[2]
DBPOOL_PORT = 7000
WORKLOAD = "soak"
COMPONENT = "app"
SOAK_USER = "fabric_soak"
SOAK_MYSQL_PASSWORD = "fabric-soak-password"


class SoakMysql:
    """The suite's own MariaDB login (``fabric_soak``) on the machine's server."""

    def __init__(self, admin: MysqlAdmin) -> None:
        self.admin = admin
        self.host = admin.host
        self.port = admin.port
        self.user = SOAK_USER
        self.password = SOAK_MYSQL_PASSWORD
        self.database = admin.database

    async def connect(self, *, admin: bool = False) -> Any:
        import aiomysql

        return await aiomysql.connect(
            host=self.host,
            port=self.port,
            user=self.admin.user if admin else self.user,
            password=self.admin.password if admin else self.password,
            db=self.database,
            autocommit=True,
            connect_timeout=10,
        )


async def _prepare_mysql(admin: MysqlAdmin) -> SoakMysql:
    if not re.fullmatch(r"\w+", admin.database):
        raise ValueError(f"unsupported database name {admin.database!r}")
    target = SoakMysql(admin)
    conn = await target.connect(admin=True)
    try:
        async with conn.cursor() as cur:
            account = (SOAK_USER, "127.0.0.1")
            await cur.execute(
                "SELECT COUNT(*) FROM mysql.user WHERE User = %s AND Host = %s", account
            )
            (exists,) = await cur.fetchone()
            if not exists:
                await cur.execute("CREATE USER %s@%s IDENTIFIED BY %s", (*account, target.password))
            await cur.execute("ALTER USER %s@%s IDENTIFIED BY %s", (*account, target.password))
            await cur.execute(f"GRANT ALL PRIVILEGES ON `{admin.database}`.* TO %s@%s", account)
    finally:
        conn.close()
    return target


class Stack:
    """Databases, tables and the fabric for one run of the suite."""

    def __init__(self, *, use_mysql: bool = True) -> None:
        self.env = BenchEnv()
        self.use_mysql = use_mysql
        self.pg: PgTarget | None = None
        self.mysql: SoakMysql | None = None
        self.notes: list[str] = []
        self.runtime: Runtime | None = None
        self.wasm: Path | None = None
        self.tables: list[str] = []
        self.run_id = uuid.uuid4().hex[:8]

    @property
    def cluster(self) -> TempCluster:
        cluster = self.env.cluster
        assert cluster is not None, "the PostgreSQL cluster is not started"
        return cluster

    @property
    def databases(self) -> list[str]:
        """The dbpool database names the load writes to."""
        return ["pg", "mysql"] if self.mysql is not None else ["pg"]

    @property
    def servers(self) -> dict[str, str]:
        return dict(self.env.servers)

    async def start(self) -> None:
        self.pg = await self.env.postgres()
        if self.use_mysql:
            try:
                self.mysql = await _prepare_mysql(self.env.mysql_admin)
                conn = await self.mysql.connect()
                async with conn.cursor() as cur:
                    await cur.execute("SELECT VERSION()")
                    (version,) = await cur.fetchone()
                conn.close()
                self.env.servers["mariadb"] = f"{version} (machine's server, user {SOAK_USER})"
            except Exception as exc:
                self.notes.append(f"MariaDB not used: {type(exc).__name__}: {exc}")
                self.mysql = None
        self.wasm = await asyncio.to_thread(dbbench)
        self.runtime = Runtime()

    async def aclose(self) -> None:
        for table in self.tables:
            with contextlib.suppress(Exception):
                await self._drop(table)
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None
        await self.env.aclose()

    # -- tables

    def table_name(self, label: str) -> str:
        return f"soak_{self.run_id}_{re.sub(r'[^a-z0-9]', '_', label)}"

    async def new_table(self, label: str) -> str:
        """A fresh table ``(id bigint, name varchar)`` in every database, no key constraint,
        so a row written twice shows as a duplicate."""
        table = self.table_name(label)
        self.tables.append(table)
        ddl = f"CREATE TABLE {table} (id bigint NOT NULL, name varchar(100))"
        conn = await self.pg_connect()
        try:
            await conn.execute(ddl)
        finally:
            await conn.close()
        if self.mysql is not None:
            mconn = await self.mysql.connect()
            try:
                async with mconn.cursor() as cur:
                    await cur.execute(ddl)
            finally:
                mconn.close()
        return table

    async def _drop(self, table: str) -> None:
        conn = await self.pg_connect()
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            await conn.close()
        if self.mysql is not None:
            mconn = await self.mysql.connect()
            try:
                async with mconn.cursor() as cur:
                    await cur.execute(f"DROP TABLE IF EXISTS {table}")
            finally:
                mconn.close()

    async def pg_connect(self) -> asyncpg.Connection:
        assert self.pg is not None
        return await asyncpg.connect(
            host=self.pg.host,
            port=self.pg.port,
            user=self.pg.user,
            password=self.pg.password,
            database=self.pg.database,
            timeout=10,
        )

    async def ids(self, database: str, table: str) -> list[int]:
        """Every id in ``table`` of ``database`` (``pg`` or ``mysql``), one per row."""
        if database == "pg":
            conn = await self.pg_connect()
            try:
                return [int(r[0]) for r in await conn.fetch(f"SELECT id FROM {table}")]
            finally:
                await conn.close()
        assert self.mysql is not None
        mconn = await self.mysql.connect()
        try:
            async with mconn.cursor() as cur:
                await cur.execute(f"SELECT id FROM {table}")
                return [int(r[0]) for r in await cur.fetchall()]
        finally:
            mconn.close()

    # -- faults on the databases

    async def kill_backends(self) -> int:
        """Terminate every server connection of the pools' logins; how many went."""
        assert self.pg is not None
        out = await asyncio.to_thread(
            self.cluster.run_sql,
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE usename = :'user' AND pid <> pg_backend_pid()) AS t",
            variables={"user": self.pg.user},
        )
        killed = int(out.strip() or 0)
        if self.mysql is not None:
            conn = await self.mysql.connect(admin=True)
            try:
                async with conn.cursor() as cur:
                    await cur.execute(
                        "SELECT id FROM information_schema.processlist WHERE user = %s",
                        (SOAK_USER,),
                    )
                    for (thread_id,) in await cur.fetchall():
                        with contextlib.suppress(Exception):
                            await cur.execute(f"KILL CONNECTION {int(thread_id)}")
                            killed += 1
            finally:
                conn.close()
        return killed

    async def restart_postgres(self) -> None:
        await asyncio.to_thread(self.cluster.restart)

    # -- the fabric

    def manifest(
        self,
        *,
        ingress_port: int | None = None,
        extra_services: Sequence[dict[str, Any]] = (),
        limits: dict[str, Any] | None = None,
        grace: str = "10s",
    ) -> dict[str, Any]:
        """The manifest (as a dict) of the ``soak`` workload."""
        assert self.pg is not None and self.wasm is not None
        databases: dict[str, Any] = {
            "pg": {
                "kind": "postgres",
                "host": self.pg.host,
                "port": self.pg.port,
                "user": self.pg.user,
                "password": self.pg.password,
                "database": self.pg.database,
                "min_size": 2,
                "max_size": 8,
                "acquire_timeout": 5.0,
            }
        }
        if self.mysql is not None:
            databases["mysql"] = {
                "kind": "mysql",
                "host": self.mysql.host,
                "port": self.mysql.port,
                "user": self.mysql.user,
                "password": self.mysql.password,
                "database": self.mysql.database,
                "min_size": 2,
                "max_size": 8,
                "acquire_timeout": 5.0,
            }
        config: dict[str, Any] = {"port": DBPOOL_PORT, "databases": databases}
        if limits:
            config["limits"] = limits
        workload: dict[str, Any] = {
            "name": WORKLOAD,
            "services": [
                {
                    "name": "dbpool",
                    "native": DBPOOL_SERVICE,
                    "ports": [DBPOOL_PORT],
                    "config": config,
                },
                *extra_services,
            ],
            "components": [
                {
                    "name": COMPONENT,
                    "wasm": str(self.wasm),
                    "concurrency": 64,
                    "queue": 1024,
                    "timeout": "20s",
                }
            ],
        }
        if ingress_port is not None:
            workload["ingress"] = [{"host_port": ingress_port, "port": DBPOOL_PORT}]
        return {"grace": grace, "python_path": [str(ROOT)], "workloads": [workload]}

    @contextlib.asynccontextmanager
    async def fabric(
        self,
        *,
        ingress: bool = True,
        extra_services: Sequence[dict[str, Any]] = (),
        limits: dict[str, Any] | None = None,
    ) -> AsyncIterator[tuple[WorkloadRuntime, int | None]]:
        """A running fabric in this process: ``(workload, ingress host port or None)``."""
        port = free_port() if ingress else None
        raw = self.manifest(ingress_port=port, extra_services=extra_services, limits=limits)
        manifest = manifest_from_dict(raw, path="<soak>", base_dir=str(ROOT))
        fab = Fabric(manifest, runtime=self.runtime, emit=lambda line: None)
        await fab.start()
        try:
            yield fab.workloads[WORKLOAD], port
        finally:
            await fab.stop()


def dbpool_stats(workload: WorkloadRuntime) -> dict[str, Any] | None:
    """What the dbpool service publishes (``fabric status``), or None while it is down."""
    for service in workload.status().services:
        if service.name == "dbpool" and isinstance(service.stats, dict):
            return service.stats
    return None


def count_rows(
    present: Sequence[int], acknowledged: set[int], issued: set[int], must_not_exist: set[int]
) -> tuple[int, int, int, int]:
    """``(lost, duplicated, unacknowledged_present, phantom)`` for one table."""
    seen: dict[int, int] = {}
    for row_id in present:
        seen[row_id] = seen.get(row_id, 0) + 1
    lost = sum(1 for row_id in acknowledged if row_id not in seen)
    duplicated = sum(1 for n in seen.values() if n > 1)
    unacked = sum(1 for row_id in seen if row_id in issued and row_id not in acknowledged)
    phantom = sum(1 for row_id in seen if row_id in must_not_exist)
    return lost, duplicated, unacked, phantom
