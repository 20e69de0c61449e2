"""A running workload whose dbpool is published through ingress, flooded with
idle outside clients: its wasm component still reaches the database, outside
clients need the secret, and the ones past the limits are refused clearly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path

import pytest

from fabric.runtime import Runtime
from fabric.workload import manifest_from_dict
from fabric.workload.runtime import Fabric
from services.dbpool.client import DbPoolClient, DbPoolError, connect
from tests.guestlib import ROOT

from .test_components import DBS, PORT, SERVICE, TIMEOUT, WORKLOAD, db_settings, dbbench

__all__ = ["dbbench"]  # the module-scoped guest fixture

SECRET = "flood-test-secret"
EXTERNAL, INGRESS_BOUND = 30, 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_component_reaches_dbpool_while_ingress_is_flooded(
    runtime: Runtime, dbbench: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FABRIC_TEST_FLOOD_SECRET", SECRET)
    host_port = free_port()
    databases = {
        name: {k: v for k, v in db_settings(kind, "fabric-flood", 3).items() if v is not None}
        for kind, name in DBS.items()
    }
    config = {
        "port": PORT,
        "databases": databases,
        "limits": {"max_external_clients": EXTERNAL, "handshake_timeout": 120.0},
        "auth": {"secret_env": "FABRIC_TEST_FLOOD_SECRET"},
    }
    raw = {
        "workloads": [
            {
                "name": WORKLOAD,
                "services": [
                    {
                        "name": SERVICE,
                        "native": "services.dbpool.service:DbPoolService",
                        "ports": [PORT],
                        "config": config,
                    }
                ],
                "components": [{"name": "bench", "wasm": str(dbbench), "timeout": "60s"}],
                "ingress": [
                    {"host_port": host_port, "port": PORT, "max_connections": INGRESS_BOUND}
                ],
            }
        ]
    }
    manifest = manifest_from_dict(raw, path="<flood>", base_dir=str(ROOT))
    fabric = Fabric(manifest, runtime=runtime, emit=lambda line: None)
    clients: list[DbPoolClient] = []
    idle: list[asyncio.StreamWriter] = []
    async with asyncio.timeout(TIMEOUT):
        await fabric.start()
    try:
        with pytest.raises(DbPoolError) as info:
            await connect(host_port)
        assert info.value.code == "auth_required"
        with pytest.raises(DbPoolError) as info:
            await connect(host_port, secret="guess")
        assert info.value.code == "auth_failed"
        clients = [await connect(host_port, secret=SECRET) for _ in range(EXTERNAL)]
        with pytest.raises(DbPoolError) as info:
            await connect(host_port, secret=SECRET)
        assert info.value.code == "too_many_clients"
        for _ in range(INGRESS_BOUND - EXTERNAL):
            _, writer = await asyncio.open_connection("127.0.0.1", host_port)
            idle.append(writer)
        workload = fabric.workloads[WORKLOAD]
        (ingress,) = workload.network.ingress_servers
        async with asyncio.timeout(TIMEOUT):
            while ingress.active < INGRESS_BOUND:  # noqa: ASYNC110 - a plain counter
                await asyncio.sleep(0.01)
        with pytest.raises(DbPoolError) as info:
            await connect(host_port, secret=SECRET, timeout=30)
        assert info.value.code == "disconnected"

        # the component inside the workload: no secret, and room to connect
        async with asyncio.timeout(TIMEOUT):
            result = await workload.invoke(
                "bench", None, ["query", str(PORT), DBS["postgres"], "SELECT 6 * 7", "[]"]
            )
        stdout = str(result["stdout"])
        assert int(result["exit_code"]) == 0, stdout + str(result["stderr"])
        facts = dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)
        assert json.loads(facts["rows"]) == [[42]]
        # an outside client still works with the secret once there is room
        await clients.pop().close()
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    extra = await connect(host_port, secret=SECRET, timeout=30)
                    break
                except DbPoolError as exc:  # the freed place may not be free yet
                    assert exc.code in ("too_many_clients", "disconnected")
                    await asyncio.sleep(0.05)
        assert (await extra.execute(DBS["mysql"], "SELECT 1 + 1")).scalar() == 2
        clients.append(extra)
    finally:
        for client in clients:
            await client.close()
        for writer in idle:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        async with asyncio.timeout(TIMEOUT):
            await fabric.stop()
