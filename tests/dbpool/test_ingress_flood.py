"""dbpool published through ingress and flooded with idle clients (real
sockets, the virtual network, the real PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from fabric.net import IngressRule, NetworkPolicy, Role, VirtualNetwork
from services.dbpool.client import DbPoolClient, DbPoolError, connect
from services.dbpool.protocol import Limits
from services.dbpool.service import DbPoolConfig, DbPoolService

from .conftest import db_config, eventually


async def test_flooded_ingress_leaves_room_for_the_workload_and_refuses_clearly() -> None:
    external, ingress_bound = 60, 100
    policy = NetworkPolicy(
        max_sockets=32, ingress=(IngressRule(port=7432, max_connections=ingress_bound),)
    )
    net = VirtualNetwork("shop", policy)

    async def start_server(handler: Any, /, *, host: str, port: int) -> Any:
        return await net.start_server(handler, port, host=host)

    limits = Limits(max_clients=200, max_external_clients=external, handshake_timeout=60.0)
    config = DbPoolConfig(port=7432, databases={"main": db_config("postgres")}, limits=limits)
    service = DbPoolService(config, start_server)
    await service.start()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    clients: list[DbPoolClient] = []
    try:
        (ingress,) = await net.start_ingress()
        # idle clients that completed the hello, up to the external limit
        clients = [await connect(ingress.port) for _ in range(external)]
        # the next one gets the protocol's refusal, not a silent close
        with pytest.raises(DbPoolError) as info:
            await connect(ingress.port)
        assert info.value.code == "too_many_clients"
        # idle sockets that never say hello fill the ingress bound ...
        idle.extend(
            [
                await asyncio.open_connection("127.0.0.1", ingress.port)
                for _ in range(ingress_bound - external)
            ]
        )
        await eventually(lambda: ingress.active == ingress_bound)
        # ... past which a client is refused at once
        with pytest.raises(DbPoolError) as info:
            await connect(ingress.port, timeout=20)
        assert info.value.code == "disconnected"
        assert ingress.over_limit == 1

        # the workload's own component still reaches its database
        component = net.attach("job", Role.COMPONENT)

        async def open_as_component(*, host: str, port: int) -> Any:
            return await net.open_connection(port, host, guest=component)

        inside = await connect(7432, open_connection=open_as_component)
        assert (await inside.execute("main", "SELECT 40 + 2")).scalar() == 42
        stats = service.statistics()
        assert stats.clients_external == external
        assert stats.clients_connected == external + 1
        assert stats.errors.get("too_many_clients") == 1
        await inside.close()
    finally:
        for client in clients:
            await client.close()
        for _, writer in idle:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await service.close()
        await net.aclose()
