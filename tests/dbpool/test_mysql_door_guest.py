"""Unmodified PyMySQL inside a componentize-py component reaches MariaDB through
the dbpool MySQL front door on its workload's virtual loopback (the ``net``
guest, mode ``pymysql-pooled``); two workloads each have a front door on
their own virtual port 3306."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiomysql
import pytest

from fabric.runtime import Runtime
from tests.wasi.netlib import running, workload

pytestmark = pytest.mark.slow

USER, PASSWORD = "app", "door-secret"


def dbpool(app: str, plugin: str) -> dict[str, Any]:
    return {
        "name": "dbpool",
        "native": "services.dbpool.service:DbPoolService",
        "ports": [7432, 3306],
        "config": {
            "databases": {
                "test": {
                    "kind": "mysql",
                    "user": "root",
                    "password": "",
                    "database": "test",
                    "min_size": 0,
                    "max_size": 2,
                    "application_name": app,
                }
            },
            "mysql": {"port": 3306, "users": {USER: {"password": PASSWORD, "plugin": plugin}}},
        },
    }


async def outside(sql: str) -> Any:
    conn = await aiomysql.connect(
        host="127.0.0.1", port=3306, user="root", password="", db="test", autocommit=True
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
            return await cur.fetchall()
    finally:
        conn.close()


async def test_pymysql_component_through_the_front_door(runtime: Runtime, net_wasm: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    tables = {"left": f"door_guest_l_{tag}", "right": f"door_guest_r_{tag}"}
    for table in tables.values():
        await outside(f"CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(64))")
    plugins = {"left": "mysql_native_password", "right": "caching_sha2_password"}
    wls = [
        {**workload(name, net_wasm), "services": [dbpool(f"door-{name}-{tag}", plugins[name])]}
        for name in tables
    ]
    try:
        async with running(runtime, *wls) as fab:
            for name, table in tables.items():
                args = ["pymysql-pooled", "127.0.0.1", "3306", USER, PASSWORD, "test", table]
                result = (await fab.invoke(name, *args)).check()
                assert result.facts == {
                    "select1": "1",
                    "session": "test:0",  # PyMySQL turns autocommit off; the session keeps it
                    "rows": "1:alpha;2:beta;3:gamma \u00e9",
                    "roundtrip": "1",
                    "after_rollback": "3",
                    "error": "1146",
                    "select2": "2",
                    "closed": "1",
                }
            report = {w.name: w for w in fab.fabric.status().workloads}
            for name in tables:  # each front door served its own workload's component
                (service,) = report[name].services
                door = service.stats["mysql"]
                assert (door["clients_total"], door["auth_failures"]) == (1, 0)
                assert door["transactions_open"] == 0
        for table in tables.values():
            assert (await outside(f"SELECT COUNT(*) FROM {table}"))[0][0] == 3
    finally:
        for table in tables.values():
            await outside(f"DROP TABLE IF EXISTS {table}")
