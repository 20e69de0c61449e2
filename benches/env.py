"""Shared infrastructure for one suite run, started lazily and torn down at the end.

* :meth:`BenchEnv.postgres` — a private :class:`~fabric.postgres.TempCluster`
  with ``scram-sha-256`` for TCP, a login role ``fabric_bench`` with a random
  password and a database ``bench`` it owns. The machine's own server is never
  touched: where it trusts loopback, no password would be checked and
  connecting would look far cheaper than it is in production.
* :meth:`BenchEnv.pgbouncer` — a private PgBouncer (transaction mode,
  scram) in front of that cluster; raises
  :class:`~benches.errors.PgBouncerNotInstalled` when absent.
* :meth:`BenchEnv.mariadb` — the machine's MariaDB (``127.0.0.1:3306`` unless
  ``FABRIC_BENCH_MYSQL_*`` say otherwise) with a user ``fabric_bench`` that has
  a password and rights on the ``test`` database.
* :meth:`BenchEnv.echo_server` — a TCP echo server on the running (uvloop)
  loop at ``127.0.0.1:<free port>``.

Each resource is created once, on first request, and shared by every
contender of every scenario; :meth:`BenchEnv.aclose` stops all of them.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import re
import secrets
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import msgspec

from benches.errors import BenchError, ContenderSkipped
from benches.model import MachineInfo
from benches.pgbouncer import PgBouncer, require_pgbouncer
from fabric.postgres import PgClusterError, TempCluster, make_dsn

__all__ = ["BENCH_USER", "BenchEnv", "MysqlAdmin", "MysqlTarget", "PgTarget", "machine_info"]

BENCH_USER = "fabric_bench"
BENCH_DATABASE = "bench"
_T = TypeVar("_T")


class PgTarget(msgspec.Struct, frozen=True, kw_only=True):
    """Connection parameters of a PostgreSQL endpoint (server or pooler)."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def dsn(self) -> str:
        return make_dsn(self.host, self.port, self.user, self.password, self.database)


class MysqlTarget(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: int
    user: str
    password: str
    database: str
    max_connections: int


class MysqlAdmin(msgspec.Struct, frozen=True, kw_only=True):
    """How to reach MariaDB as an administrator, and the bench user's password."""

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""
    database: str = "test"
    bench_password: str = "fabric-bench-password"

    @classmethod
    def from_environ(cls) -> MysqlAdmin:
        env = os.environ
        return cls(
            host=env.get("FABRIC_BENCH_MYSQL_HOST", "127.0.0.1"),
            port=int(env.get("FABRIC_BENCH_MYSQL_PORT", "3306")),
            user=env.get("FABRIC_BENCH_MYSQL_ADMIN_USER", "root"),
            password=env.get("FABRIC_BENCH_MYSQL_ADMIN_PASSWORD", ""),
            database=env.get("FABRIC_BENCH_MYSQL_DATABASE", "test"),
            bench_password=env.get("FABRIC_BENCH_MYSQL_PASSWORD", "fabric-bench-password"),
        )


class _Lazy:
    """Run an async factory once; later callers get the same result or error."""

    __slots__ = ("_error", "_lock", "_value")

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._value: Any = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self._value is not None

    async def get(self, factory: Callable[[], Awaitable[_T]]) -> _T:
        async with self._lock:
            if self._error is not None:
                raise self._error
            if self._value is None:
                try:
                    self._value = await factory()
                except Exception as exc:
                    self._error = exc
                    raise
            value: _T = self._value
            return value


class _EchoProtocol(asyncio.Protocol):
    """Echo every byte back, pausing reads while the peer is slow to read."""

    def __init__(self, server: _EchoServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._server.transports.add(self._transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._server.transports.discard(self._transport)


class _EchoServer:
    def __init__(self) -> None:
        self.transports: set[asyncio.Transport] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _EchoProtocol(self), "127.0.0.1", 0, backlog=4096
        )
        sock = self.server.sockets[0]
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for transport in list(self.transports):
            transport.close()
        if self.server is not None:
            await self.server.wait_closed()


class BenchEnv:
    """Lazily started, shared resources for the contenders of one suite run."""

    def __init__(
        self,
        *,
        base_dir: Path | None = None,
        mysql: MysqlAdmin | None = None,
        pgbouncer_binary: str | None = None,
    ) -> None:
        self.base_dir = base_dir
        self.mysql_admin = mysql or MysqlAdmin.from_environ()
        self.pgbouncer_binary = pgbouncer_binary
        self.servers: dict[str, str] = {}
        self._pg_password = secrets.token_urlsafe(18)
        self._bench_password = secrets.token_urlsafe(18)
        self._cluster: TempCluster | None = None
        self._bouncer: PgBouncer | None = None
        self._echo: _EchoServer | None = None
        self._lazy: dict[str, _Lazy] = {}
        self._closed = False

    def __repr__(self) -> str:
        started = [
            name for name in ("postgres", "pgbouncer", "mariadb", "echo") if self._started(name)
        ]
        return f"<BenchEnv started={started}>"

    def _started(self, name: str) -> bool:
        lazy = self._lazy.get(name)
        return lazy is not None and lazy.done

    async def _once(self, name: str, factory: Callable[[], Awaitable[_T]]) -> _T:
        if self._closed:
            raise BenchError("the bench environment is closed")
        lazy = self._lazy.setdefault(name, _Lazy())
        return await lazy.get(factory)

    @property
    def cluster(self) -> TempCluster | None:
        """The private PostgreSQL cluster, once :meth:`postgres` started it."""
        return self._cluster

    # -- PostgreSQL

    async def postgres(self) -> PgTarget:
        """The bench role on the private scram cluster (started on first call)."""
        return await self._once("postgres", self._start_postgres)

    async def _start_postgres(self) -> PgTarget:
        cluster = TempCluster(
            auth="scram-sha-256",
            password=self._pg_password,
            base_dir=self.base_dir,
            max_connections=400,
        )
        try:
            await asyncio.to_thread(cluster.start)
        except PgClusterError as exc:
            raise ContenderSkipped(f"no private PostgreSQL cluster: {exc}") from exc
        self._cluster = cluster
        await asyncio.to_thread(cluster.create_role, BENCH_USER, self._bench_password)
        await asyncio.to_thread(cluster.create_database, BENCH_DATABASE, owner=BENCH_USER)
        version = await asyncio.to_thread(cluster.run_sql, "SHOW server_version")
        self.servers["postgresql"] = (
            f"{version.strip()} (private cluster, scram-sha-256, {cluster.binaries.source})"
        )
        return PgTarget(
            host=cluster.host,
            port=cluster.port,
            user=BENCH_USER,
            password=self._bench_password,
            database=BENCH_DATABASE,
        )

    async def pgbouncer(self) -> PgTarget:
        """The bench role through a private PgBouncer in transaction mode."""
        return await self._once("pgbouncer", self._start_pgbouncer)

    async def _start_pgbouncer(self) -> PgTarget:
        binary = require_pgbouncer(self.pgbouncer_binary)
        pg = await self.postgres()
        assert self._cluster is not None
        # The role's SCRAM secret, as production set-ups give it (auth_file or auth_query):
        # PgBouncer then verifies clients without a key derivation of its own and logs in
        # to the server with the client's proof (SCRAM pass-through).
        secret = await asyncio.to_thread(
            self._cluster.run_sql,
            "SELECT rolpassword FROM pg_authid WHERE rolname = :'name'",
            variables={"name": pg.user},
        )
        bouncer = PgBouncer(
            server_host=pg.host,
            server_port=pg.port,
            users={pg.user: secret.strip()},
            pool_mode="transaction",
            pool_size=20,
            base_dir=self.base_dir,
            binary=binary,
        )
        await asyncio.to_thread(bouncer.start)
        self._bouncer = bouncer
        self.servers["pgbouncer"] = f"{bouncer.version} (transaction mode, scram-sha-256)"
        return msgspec.structs.replace(pg, host=bouncer.host, port=bouncer.port)

    # -- MariaDB

    async def mariadb(self) -> MysqlTarget:
        """The ``fabric_bench`` user (with a password) on the machine's MariaDB."""
        return await self._once("mariadb", self._prepare_mariadb)

    async def _prepare_mariadb(self) -> MysqlTarget:
        import aiomysql

        admin = self.mysql_admin
        if not re.fullmatch(r"\w+", admin.database):
            raise BenchError(f"unsupported database name {admin.database!r}")
        where = f"{admin.host}:{admin.port}"
        try:
            conn = await aiomysql.connect(
                host=admin.host,
                port=admin.port,
                user=admin.user,
                password=admin.password,
                db=admin.database,
                autocommit=True,
                connect_timeout=10,
            )
        except Exception as exc:
            raise ContenderSkipped(f"MariaDB not reachable at {where}: {exc}") from exc
        account = (BENCH_USER, "127.0.0.1")
        try:
            async with conn.cursor() as cur:
                await cur.execute(
                    "SELECT COUNT(*) FROM mysql.user WHERE User = %s AND Host = %s", account
                )
                (exists,) = await cur.fetchone()
                if not exists:
                    try:
                        await cur.execute(
                            "CREATE USER %s@%s IDENTIFIED BY %s", (*account, admin.bench_password)
                        )
                    except Exception as exc:  # created concurrently by another run
                        if "1396" not in str(exc):
                            raise
                await cur.execute(
                    "ALTER USER %s@%s IDENTIFIED BY %s", (*account, admin.bench_password)
                )
                await cur.execute(f"GRANT ALL PRIVILEGES ON `{admin.database}`.* TO %s@%s", account)
                await cur.execute("SELECT VERSION(), @@max_connections")
                version, max_connections = await cur.fetchone()
        finally:
            await conn.ensure_closed()
        self.servers["mariadb"] = f"{version} (machine's server at {where})"
        return MysqlTarget(
            host=admin.host,
            port=admin.port,
            user=BENCH_USER,
            password=admin.bench_password,
            database=admin.database,
            max_connections=int(max_connections),
        )

    # -- loopback

    async def echo_server(self) -> tuple[str, int]:
        """``(host, port)`` of a TCP echo server on the running loop."""
        return await self._once("echo", self._start_echo)

    async def _start_echo(self) -> tuple[str, int]:
        self._echo = _EchoServer()
        return await self._echo.start()

    # -- lifecycle

    async def aclose(self) -> None:
        """Stop everything that was started. Idempotent."""
        self._closed = True
        if self._echo is not None:
            await self._echo.close()
            self._echo = None
        if self._bouncer is not None:
            await asyncio.to_thread(self._bouncer.stop)
            self._bouncer = None
        if self._cluster is not None:
            await asyncio.to_thread(self._cluster.stop)
            self._cluster = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


# ------------------------------------------------------------------ machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _os_name() -> str:
    try:
        release = platform.freedesktop_os_release()
        return release.get("PRETTY_NAME", platform.system())
    except OSError:
        return platform.system()


def _package_versions(names: tuple[str, ...]) -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def machine_info(servers: dict[str, str] | None = None) -> MachineInfo:
    """What ran the benchmarks: hardware, OS, Python, loop, libraries, servers."""
    loop = asyncio.get_event_loop_policy().__class__.__module__
    try:
        running = asyncio.get_running_loop()
        loop = f"{type(running).__module__}.{type(running).__name__}"
    except RuntimeError:
        pass
    return MachineInfo(
        hostname=socket.gethostname(),
        os=_os_name(),
        kernel=platform.release(),
        cpu_model=_cpu_model(),
        cpus=os.cpu_count() or 0,
        memory_mb=_memory_mb(),
        python=platform.python_version(),
        event_loop=loop,
        packages=_package_versions(
            ("uvloop", "asyncpg", "aiomysql", "PyMySQL", "msgspec", "wasmtime", "matplotlib")
        ),
        servers=dict(servers or {}),
    )
