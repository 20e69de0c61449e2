"""The front door in a running workload, configured from a manifest: its virtual
port published on a host port by the workload's ingress rule."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import asyncpg
import pytest

from fabric.runtime import Runtime
from fabric.workload import ManifestError, load_manifest, manifest_from_dict, validate
from fabric.workload.runtime import Fabric
from tests.guestlib import ROOT

from .conftest import PASSWORD, PASSWORD_ENV


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_manifest_front_door_through_ingress(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    host_port = free_port()
    config = {
        "port": 7432,
        "databases": {
            "orders": {"kind": "postgres", "user": "postgres", "database": "test", "max_size": 2}
        },
        "postgres": {
            "port": 6432,
            "users": {
                "app": {"password_env": PASSWORD_ENV},
                "ops": {"auth": "trust", "admin": True},
            },
        },
    }
    raw = {
        "workloads": [
            {
                "name": "shop",
                "services": [
                    {
                        "name": "dbpool",
                        "native": "services.dbpool.service:DbPoolService",
                        "ports": [7432, 6432],
                        "config": config,
                    }
                ],
                "ingress": [{"host_port": host_port, "port": 6432}],
            }
        ]
    }
    manifest = manifest_from_dict(raw, path="<pgdoor>", base_dir=str(ROOT))
    fabric = Fabric(manifest, runtime=runtime, emit=lambda line: None)
    async with asyncio.timeout(60):
        await fabric.start()
    try:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=host_port, user="app", password=PASSWORD, database="orders"
        )
        try:
            assert await conn.fetchval("SELECT $1::int * 2", 21) == 42
            async with conn.transaction():
                assert await conn.fetchval("SELECT current_database()") == "test"
        finally:
            await conn.close()
        admin = await asyncpg.connect(
            host="127.0.0.1", port=host_port, user="ops", database="fabric"
        )
        await admin.execute("SHOW POOLS")
        await admin.close()
    finally:
        await fabric.stop()


def test_a_bad_front_door_config_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "shop.toml"
    path.write_text(
        """[[workloads]]
name = "shop"
[[workloads.services]]
name = "dbpool"
native = "services.dbpool.service:DbPoolService"
[workloads.services.config.databases.orders]
kind = "postgres"
[workloads.services.config.postgres.users.app]
auth = "md5"
"""
    )
    manifest = load_manifest(path)
    with pytest.raises(ManifestError) as info:
        validate(manifest, import_native=True)
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert "workloads[0].services[0].config.postgres.users.app.auth" in message
