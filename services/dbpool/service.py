"""The dbpool service: pools from a config plus a listening `DbPoolServer`.

Framework-neutral: the listener comes from a ``start_server(handler, host=,
port=)`` callable, ``asyncio.start_server`` by default; the workload layer
passes the virtual network's (``VirtualNetwork.start_server`` has that shape).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, ClassVar, Protocol

import msgspec

from pools import DatabaseConfig, Pool, create_pool

from .auth import AuthConfig, Authenticator
from .client import DbPoolError
from .local import LocalSession
from .messages import Limits, ServerStats
from .metrics import server_metrics
from .mysql import MySQLConfig, MySQLFrontDoor, check_config
from .pgdoor import PgFrontDoor, PostgresFrontDoorConfig
from .server import DbPoolServer
from .session import StreamReader, StreamWriter
from .sqlimport import SqlImport

__all__ = [
    "DEFAULT_PORT",
    "GUEST_SDK",
    "DbPoolConfig",
    "DbPoolService",
    "Listener",
    "StartServer",
]

DEFAULT_PORT = 7432

#: The pure-Python guest SDK (``fabric_dbpool``, ``fabric_pgwire``).
GUEST_SDK = Path(__file__).resolve().parent / "guest"


class DbPoolConfig(msgspec.Struct, frozen=True, kw_only=True):
    """``databases`` maps the names clients use (the ``db`` field) to pools."""

    databases: dict[str, DatabaseConfig]
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = DEFAULT_PORT
    host: str = "127.0.0.1"
    limits: Limits = msgspec.field(default_factory=Limits)
    #: clients from outside the workload must prove they know this secret
    auth: AuthConfig | None = None
    #: a PostgreSQL wire-protocol front door (docs/postgres-front-door.md)
    postgres: PostgresFrontDoorConfig | None = None
    #: the MySQL front door: MySQL clients borrow the mysql pools (docs/mysql-front-door.md)
    mysql: MySQLConfig | None = None


class Listener(Protocol):
    """What ``start_server`` returns (asyncio.Server has this shape)."""

    def close(self) -> None: ...

    def wait_closed(self) -> Awaitable[None]: ...


Handler = Callable[[StreamReader, StreamWriter], Awaitable[None]]


class StartServer(Protocol):
    """``asyncio.start_server`` or ``VirtualNetwork.start_server``: called with the
    connection handler positionally and ``host``/``port`` by keyword."""

    def __call__(self, handler: Handler, /, *, host: str, port: int) -> Awaitable[Listener]: ...


async def _asyncio_start_server(handler: Handler, /, *, host: str, port: int) -> Listener:
    return await asyncio.start_server(handler, host=host, port=port)


class DbPoolService:
    """Starts the pools, then the server; ``close`` undoes both in reverse.

    Also a fabric native service: name it in a manifest as
    ``native = "services.dbpool.service:DbPoolService"`` with the
    ``DbPoolConfig`` fields as its ``config`` table; ``serve(ctx)`` listens on
    the workload's virtual network and publishes the server statistics to
    ``fabric status`` (and, through ``metrics()``, to the metrics endpoint).
    Components of the workload built from Python source get its guest SDK on
    their module path (``guest_paths``); components that import
    ``fabric:dbpool/sql`` reach it in-process through the handle it publishes
    (``open_session``, docs/sql-import.md).
    """

    guest_paths: ClassVar[tuple[Path, ...]] = (GUEST_SDK,)
    #: components importing ``fabric:dbpool/sql`` reach the service in-process
    host_imports: ClassVar[tuple[SqlImport, ...]] = (SqlImport(),)
    config_type: ClassVar[type[DbPoolConfig]] = DbPoolConfig  # checked by ``fabric validate``

    @classmethod
    def for_worker(cls, config: Mapping[str, Any], slot: Any) -> dict[str, Any]:
        """The config of one worker of ``fabric run --workers N`` (``slot``: its
        ``index`` of ``count``): every pool's ``max_size`` and ``min_size`` are
        totals across the workers, split by `DatabaseConfig.shared`, so the
        database sees at most ``max_size`` connections whatever the count.
        ``ValueError`` when a pool's ``max_size`` is below the worker count."""
        parsed = msgspec.convert(dict(config), DbPoolConfig)
        databases = {}
        for name, db in parsed.databases.items():
            try:
                databases[name] = db.shared(slot.index, slot.count)
            except ValueError as exc:
                raise ValueError(f"databases.{name}: {exc}") from None
        shared = msgspec.structs.replace(parsed, databases=databases)
        table: dict[str, Any] = msgspec.to_builtins(shared)
        return table

    def __init__(
        self, config: DbPoolConfig | Mapping[str, Any], start_server: StartServer | None = None
    ) -> None:
        if not isinstance(config, DbPoolConfig):
            config = msgspec.convert(dict(config), DbPoolConfig)
        if config.mysql is not None:
            check_config(config.mysql, {n: db.kind for n, db in config.databases.items()})
        self.config = config
        self._start_server = start_server or _asyncio_start_server
        #: the MySQL front door while running (``mysql`` in the config)
        self.mysql: MySQLFrontDoor | None = None
        self._mysql_listener: Listener | None = None
        self.pools: dict[str, Pool] = {}
        self.server: DbPoolServer | None = None
        self._listener: Listener | None = None
        self._bound_port: int | None = None
        self.postgres: PgFrontDoor | None = None
        self._postgres_listener: Listener | None = None

    def __repr__(self) -> str:
        state = "running" if self._listener is not None else "stopped"
        return f"<DbPoolService {state} port={self.port} databases={sorted(self.config.databases)}>"

    @property
    def port(self) -> int:
        """The bound port (resolves port 0 when the listener exposes its sockets)."""
        if self._bound_port is not None:
            return self._bound_port
        sockets: Any = getattr(self._listener, "sockets", None)
        if sockets:
            # Asked on every open of the typed import: remember it while listening.
            self._bound_port = int(sockets[0].getsockname()[1])
            return self._bound_port
        return self.config.port

    async def start(self) -> None:
        if self._listener is not None:
            raise RuntimeError("DbPoolService already started")
        auth = Authenticator.from_config(self.config.auth) if self.config.auth else None
        pools = {name: create_pool(cfg) for name, cfg in self.config.databases.items()}
        results = await asyncio.gather(*(p.start() for p in pools.values()), return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await asyncio.gather(*(p.close() for p in pools.values()), return_exceptions=True)
            raise failure
        self.pools = pools
        self.server = DbPoolServer(pools, self.config.limits, auth)
        try:
            self._listener = await self._start_server(
                self.server.handle_connection, host=self.config.host, port=self.config.port
            )
        except BaseException:
            await self._close_pools()
            raise
        if self.config.mysql is not None:
            await self._start_mysql(self.config.mysql)
        if self.config.postgres is not None:
            try:
                await self._start_postgres(self.config.postgres)
            except BaseException:
                await self.close()
                raise

    async def _start_mysql(self, config: MySQLConfig) -> None:
        self.mysql = MySQLFrontDoor(config, self.pools)
        try:
            self._mysql_listener = await self._start_server(
                self.mysql.handle_connection, host=self.config.host, port=config.port
            )
        except BaseException:
            await self.close()
            raise
        sockets: Any = getattr(self._mysql_listener, "sockets", None)
        if sockets:
            self.mysql.port = int(sockets[0].getsockname()[1])

    async def _start_postgres(self, config: PostgresFrontDoorConfig) -> None:
        door = self.postgres = PgFrontDoor(config, self.config.databases, self.config.limits)
        await door.start()
        self._postgres_listener = await self._start_server(
            door.handle_connection, host=self.config.host, port=config.port
        )
        sockets: Any = getattr(self._postgres_listener, "sockets", None)
        if sockets:
            door.port = int(sockets[0].getsockname()[1])

    async def close(self) -> None:
        mysql_listener, self._mysql_listener = self._mysql_listener, None
        if mysql_listener is not None:
            mysql_listener.close()
        if self.mysql is not None:
            await self.mysql.close()
        listener, self._listener = self._listener, None
        self._bound_port = None
        if listener is not None:
            listener.close()
        if self.server is not None:
            await self.server.close()
        if listener is not None:
            await listener.wait_closed()
        if mysql_listener is not None:
            await mysql_listener.wait_closed()
        await self._close_postgres()
        await self._close_pools()

    async def _close_postgres(self) -> None:
        listener, self._postgres_listener = self._postgres_listener, None
        door, self.postgres = self.postgres, None
        if listener is not None:
            listener.close()
        if door is not None:
            await door.close()
        if listener is not None:
            await listener.wait_closed()

    async def _close_pools(self) -> None:
        pools, self.pools = self.pools, {}
        await asyncio.gather(*(p.close() for p in pools.values()), return_exceptions=True)

    def open_session(self) -> LocalSession:
        """An in-process session with the running server (no socket; see `LocalSession`)."""
        if self.server is None or self._listener is None:
            raise DbPoolError("disconnected", None, "the dbpool service is not running")
        return LocalSession(self.server)

    async def settled(self) -> None:
        """Wait until every lease being given back is in its pool again.

        With ``reply_before_release`` (the default) a reply can reach its client
        while the lease behind it is still being reset: code that looks at
        ``in_use`` right after a reply waits here first."""
        if self.server is not None:
            await self.server.settle_releases()

    def statistics(self) -> ServerStats:
        if self.server is None:
            raise RuntimeError("DbPoolService not started")
        stats = self.server.statistics()
        if self.mysql is not None:
            door = msgspec.to_builtins(self.mysql.statistics())
            stats = msgspec.structs.replace(stats, mysql=door)
        if self.postgres is not None:
            stats = msgspec.structs.replace(stats, postgres=self.postgres.statistics())
        return stats

    def metrics(self) -> list[dict[str, Any]]:
        """The statistics as metric families for fabric's metrics endpoint
        (``services/dbpool/metrics.py``); none while not started."""
        return [] if self.server is None else server_metrics(self.statistics())

    async def serve(self, ctx: Any) -> None:
        """Run as a fabric native service until cancelled."""
        self._start_server = ctx.network.start_server
        await self.start()
        ctx.publish_stats(self.statistics)
        publish = getattr(ctx, "publish_handle", None)
        if publish is not None:  # in-process sessions for the typed sql import
            publish(self)
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def __aenter__(self) -> DbPoolService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
