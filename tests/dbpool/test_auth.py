"""Authentication of clients from outside the workload, against the real databases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fabric.net import IngressRule, NetworkPolicy, VirtualNetwork
from services.dbpool.auth import METHOD, AuthConfig, proof
from services.dbpool.client import DbPoolError, connect
from services.dbpool.protocol import Auth, Challenge, Done, Error, Ping, Pong, Query
from services.dbpool.service import DbPoolConfig, DbPoolService

from .conftest import db_config
from .guestsdk import fabric_dbpool
from .test_server import Raw

SECRET = "correct horse battery staple"


def leases(service: DbPoolService) -> int:
    return service.statistics().databases["main"].leases_served


@contextlib.asynccontextmanager
async def auth_service(kind: str, auth: AuthConfig, **kw: object) -> AsyncIterator[DbPoolService]:
    config = DbPoolConfig(port=0, databases={"main": db_config(kind)}, auth=auth)
    service = DbPoolService(config, **kw)  # type: ignore[arg-type]
    await service.start()
    try:
        yield service
    finally:
        await service.close()


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> AuthConfig:
    monkeypatch.setenv("FABRIC_TEST_DBPOOL_SECRET", SECRET)
    return AuthConfig(secret_env="FABRIC_TEST_DBPOOL_SECRET")


async def test_missing_or_wrong_secret_is_refused_before_any_database_work(
    kind: str, secret_env: AuthConfig
) -> None:
    async with auth_service(kind, secret_env) as service:
        before = leases(service)
        with pytest.raises(DbPoolError) as info:
            await connect(service.port)
        assert info.value.code == "auth_required"
        with pytest.raises(DbPoolError) as info:
            await connect(service.port, secret="not the secret")
        assert info.value.code == "auth_failed"
        # a hand-driven client that skips the challenge and sends a query at once
        raw = await Raw.open(service.port)
        hello = await raw.hello()
        assert hello.auth_required
        assert isinstance(await raw.recv(), Challenge)
        raw.send(Query(1, "main", "SELECT 1"))
        err = await raw.recv()
        assert isinstance(err, Error) and (err.id, err.code) == (0, "auth_required")
        assert await raw.eof()
        await raw.close()
        stats = service.statistics()
        assert leases(service) == before, "no lease was taken for an unauthenticated client"
        assert "query" not in stats.requests
        assert stats.auth_failures == 2
        assert stats.errors.get("auth_failed") == 1

        client = await connect(service.port, secret=SECRET)
        res = await client.execute("main", "SELECT 41 + 1")
        assert res.scalar() == 42
        await client.close()


async def test_raw_challenge_response_and_a_replayed_proof(secret_env: AuthConfig) -> None:
    async with auth_service("postgres", secret_env) as service:
        first = await Raw.open(service.port)
        await first.hello()
        challenge = await first.recv()
        assert isinstance(challenge, Challenge) and challenge.method == METHOD
        assert len(challenge.nonce) == 32
        good = proof(SECRET.encode(), challenge.nonce)
        first.send(Auth(7, METHOD, good), Ping(8))
        assert await first.responses(2) == {7: Done(7), 8: Pong(8)}
        await first.close()
        # the same proof does not open another connection: each gets a fresh nonce
        second = await Raw.open(service.port)
        await second.hello()
        other = await second.recv()
        assert isinstance(other, Challenge) and other.nonce != challenge.nonce
        second.send(Auth(1, METHOD, good))
        err = await second.recv()
        assert isinstance(err, Error) and err.code == "auth_failed"
        await second.close()


async def test_secret_from_a_file_and_the_guest_sdk(tmp_path: Path) -> None:
    path = tmp_path / "dbpool.secret"
    path.write_text(SECRET + "\n")
    async with auth_service("mysql", AuthConfig(secret_file=str(path))) as service:

        def scenario() -> None:
            with pytest.raises(fabric_dbpool.DbPoolError) as info:
                fabric_dbpool.connect(port=service.port, timeout=30)
            assert info.value.code == "auth_required"
            with pytest.raises(fabric_dbpool.DbPoolError) as info:
                fabric_dbpool.connect(port=service.port, timeout=30, secret="wrong")
            assert info.value.code == "auth_failed"
            with fabric_dbpool.connect(port=service.port, timeout=30, secret=SECRET) as conn:
                assert conn.execute("main", "SELECT 6 * 7").scalar() == 42

        await asyncio.to_thread(scenario)


async def test_the_secret_is_never_shown(secret_env: AuthConfig) -> None:
    async with auth_service("postgres", secret_env) as service:
        assert service.server is not None
        shown = " ".join(
            [
                repr(service),
                repr(service.config),
                repr(service.server.auth),
                str(service.statistics()),
            ]
        )
        assert SECRET not in shown


def test_auth_config_needs_exactly_one_source() -> None:
    with pytest.raises(ValueError):
        AuthConfig()
    with pytest.raises(ValueError):
        AuthConfig(secret_env="A", secret_file="/b")


async def test_missing_secret_stops_the_service_from_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FABRIC_TEST_DBPOOL_UNSET", raising=False)
    service = DbPoolService(
        DbPoolConfig(
            port=0,
            databases={"main": db_config("postgres")},
            auth=AuthConfig(secret_env="FABRIC_TEST_DBPOOL_UNSET"),
        )
    )
    with pytest.raises(ValueError, match="FABRIC_TEST_DBPOOL_UNSET is not set"):
        await service.start()


async def test_peers_inside_the_workload_are_trusted_ingress_clients_are_not(
    secret_env: AuthConfig,
) -> None:
    net = VirtualNetwork("w", NetworkPolicy(ingress=(IngressRule(port=7432),)))

    async def start_server(handler, /, *, host, port):  # type: ignore[no-untyped-def]
        return await net.start_server(handler, port, host=host)

    config = DbPoolConfig(port=7432, databases={"main": db_config("postgres")}, auth=secret_env)
    service = DbPoolService(config, start_server)
    await service.start()
    try:
        (ingress,) = await net.start_ingress()
        inside = await connect(7432, open_connection=net.open_connection)
        assert await inside.execute("main", "SELECT 1") is not None
        with pytest.raises(DbPoolError) as info:
            await connect(ingress.port)
        assert info.value.code == "auth_required"
        outside = await connect(ingress.port, secret=SECRET)
        assert (await outside.execute("main", "SELECT 2")).scalar() == 2
        stats = service.statistics()
        assert (stats.clients_connected, stats.clients_external) == (2, 1)
        await outside.close()
        await inside.close()
    finally:
        await service.close()
        await net.aclose()
    # trust_internal = false: the workload's own peers need the secret too
    strict = AuthConfig(secret_env="FABRIC_TEST_DBPOOL_SECRET", trust_internal=False)
    net = VirtualNetwork("w2", NetworkPolicy())
    config = DbPoolConfig(port=7432, databases={"main": db_config("postgres")}, auth=strict)
    service = DbPoolService(config, start_server)
    await service.start()
    try:
        with pytest.raises(DbPoolError) as info:
            await connect(7432, open_connection=net.open_connection)
        assert info.value.code == "auth_required"
        client = await connect(7432, open_connection=net.open_connection, secret=SECRET)
        await client.close()
    finally:
        await service.close()
        await net.aclose()
