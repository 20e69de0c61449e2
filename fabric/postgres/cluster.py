"""Throwaway PostgreSQL clusters for tests, benchmarks and the demo.

A :class:`TempCluster` runs ``initdb`` into a fresh private directory and
starts the server with ``pg_ctl``:

* it listens on ``127.0.0.1:<port>`` (a free port unless one is given) and on
  a Unix socket in its own directory;
* host connections use ``scram-sha-256`` (or ``trust``); the Unix socket,
  which lives in a directory only the server's user may enter, trusts local
  users so the cluster can be administered with ``psql`` without a password;
* durability is switched off (``fsync``, ``synchronous_commit``,
  ``full_page_writes``) and ``shared_buffers`` is small: the data is thrown
  away with the directory on :meth:`TempCluster.stop`.

PostgreSQL refuses to run as root. When the effective uid is 0, ``initdb``
and ``pg_ctl`` run as the ``postgres`` system user (``subprocess`` switches
uid, gid and drops supplementary groups) and the cluster directory is
chowned to it.

Server binaries are looked up in ``$FABRIC_PG_BIN_DIR``, next to ``initdb``
on ``$PATH``, under ``/usr/lib/postgresql/*/bin``, and last inside the
``pgserver`` PyPI package (which bundles PostgreSQL) when it is installed.

:func:`find_or_start_postgres` is what the demo uses: a server already
listening on the given address is reused, otherwise an embedded cluster is
started on that port.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import msgspec

from .binaries import BinarySource, PgBinaries, find_pg_binaries
from .errors import ClusterCommandError, ClusterStartError, ClusterStateError
from .probe import free_port, make_dsn
from .proc import give_to_service_user, make_private_dir, run_command

Auth = Literal["scram-sha-256", "trust"]
ClusterState = Literal["new", "running", "stopped"]


# ------------------------------------------------------------------- cluster


class ClusterStatistics(msgspec.Struct, frozen=True):
    """A snapshot of a :class:`TempCluster`."""

    state: ClusterState
    host: str
    port: int | None
    pid: int | None
    auth: Auth
    version: str | None
    source: BinarySource | None
    starts: int
    restarts: int
    base_dir: str | None


_live_clusters: weakref.WeakSet[TempCluster] = weakref.WeakSet()


def _stop_live_clusters() -> None:
    for cluster in list(_live_clusters):
        with contextlib.suppress(Exception):
            cluster.stop()


atexit.register(_stop_live_clusters)


class TempCluster:
    """A private PostgreSQL cluster in a temporary directory.

    Use as a (sync or async) context manager, or call :meth:`start` and
    :meth:`stop`. :meth:`stop` shuts the server down and deletes its directory;
    :meth:`restart` keeps the data.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        port: int | None = None,
        *,
        auth: Auth = "scram-sha-256",
        password: str,
        base_dir: Path | None = None,
        superuser: str = "postgres",
        bin_dir: Path | None = None,
        prefer: Literal["any", "system", "pgserver"] = "any",
        max_connections: int = 100,
        settings: Mapping[str, str | int | float | bool] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        if auth not in ("scram-sha-256", "trust"):
            raise ValueError(f"auth must be 'scram-sha-256' or 'trust', not {auth!r}")
        if not password:
            raise ValueError("a non-empty superuser password is required")
        self.auth: Auth = auth
        self.password = password
        self.superuser = superuser
        self.max_connections = max_connections
        self._requested_port = port
        self._base_parent = base_dir
        self._bin_dir = bin_dir
        self._prefer: Literal["any", "system", "pgserver"] = prefer
        self._settings = dict(settings or {})
        self._start_timeout = start_timeout
        self._lock = threading.RLock()
        self._state: ClusterState = "new"
        self._binaries: PgBinaries | None = None
        self._base: Path | None = None
        self._port: int | None = None
        self._starts = 0
        self._restarts = 0

    # -- properties

    @property
    def state(self) -> ClusterState:
        return self._state

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def port(self) -> int:
        if self._port is None:
            raise ClusterStateError("the cluster has no port before start()")
        return self._port

    @property
    def base_dir(self) -> Path:
        if self._base is None:
            raise ClusterStateError("the cluster has no directory before start()")
        return self._base

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "sock"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def binaries(self) -> PgBinaries:
        if self._binaries is None:
            self._binaries = find_pg_binaries(self._prefer, self._bin_dir)
        return self._binaries

    @property
    def version(self) -> str:
        return self.binaries.version

    @property
    def dsn(self) -> str:
        """The superuser's DSN over TCP to the ``postgres`` database."""
        return self.dsn_for(self.superuser, self.password, "postgres")

    def dsn_for(self, user: str, password: str | None, database: str = "postgres") -> str:
        return make_dsn(self.host, self.port, user, password, database)

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, from ``postmaster.pid``."""
        if self._base is None:
            return None
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if first.strip().isdigit() else None

    def statistics(self) -> ClusterStatistics:
        return ClusterStatistics(
            state=self._state,
            host=self.host,
            port=self._port,
            pid=self.pid if self._state == "running" else None,
            auth=self.auth,
            version=self._binaries.version if self._binaries else None,
            source=self._binaries.source if self._binaries else None,
            starts=self._starts,
            restarts=self._restarts,
            base_dir=str(self._base) if self._base else None,
        )

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "-"
        return (
            f"<TempCluster {self._state} {self.host}:{port} auth={self.auth} "
            f"starts={self._starts} restarts={self._restarts}>"
        )

    # -- lifecycle

    def start(self) -> Self:
        """initdb into a fresh directory and start the server (waits until ready)."""
        with self._lock:
            if self._state == "running":
                raise ClusterStateError("the cluster is already running")
            binaries = self.binaries
            self._base = make_private_dir(self._base_parent, prefix="fabric-pg-")
            try:
                self._initdb(binaries)
                self._start_server(binaries)
            except BaseException:
                self._remove_dir()
                raise
            self._state = "running"
            self._starts += 1
            _live_clusters.add(self)
            return self

    def restart(self) -> None:
        """Restart the server (fast shutdown: open sessions are disconnected)."""
        with self._lock:
            self._require_running()
            self._pg_ctl("restart", "-m", "fast", "-l", str(self.log_path))
            self._restarts += 1

    def stop(self) -> None:
        """Stop the server and delete the cluster's directory. Idempotent."""
        with self._lock:
            if self._state != "running":
                return
            try:
                self._shutdown()
            finally:
                self._remove_dir()
                self._state = "stopped"
                _live_clusters.discard(self)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        if not self.running:
            await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- administration

    def run_sql(
        self,
        sql: str,
        *,
        database: str = "postgres",
        variables: Mapping[str, str] | None = None,
    ) -> str:
        """Run SQL with ``psql`` over the Unix socket as the superuser.

        ``variables`` are psql variables: write ``:"name"`` for an identifier
        and ``:'name'`` for a literal, and psql quotes them.
        """
        self._require_running()
        argv = [
            self.binaries.tool("psql"),
            "-X", "-q", "-A", "-t",
            "-v", "ON_ERROR_STOP=1",
            "-h", str(self.socket_dir),
            "-p", str(self.port),
            "-U", self.superuser,
            "-d", database,
        ]  # fmt: skip
        for key, value in (variables or {}).items():
            argv += ["-v", f"{key}={value}"]
        out = run_command(
            argv, cwd=self.base_dir, env={"PGPASSWORD": self.password}, stdin=sql, timeout=60
        )
        return out.rstrip("\n")

    def create_role(self, name: str, password: str, *, superuser: bool = False) -> None:
        """Create a login role; its password is stored as a SCRAM secret."""
        kind = "SUPERUSER" if superuser else "NOSUPERUSER"
        self.run_sql(
            "SET password_encryption = 'scram-sha-256';\n"
            f"CREATE ROLE :\"name\" WITH LOGIN {kind} PASSWORD :'password';\n",
            variables={"name": name, "password": password},
        )

    def create_database(self, name: str, *, owner: str | None = None) -> None:
        self.run_sql(
            'CREATE DATABASE :"name" OWNER :"owner";\n',
            variables={"name": name, "owner": owner or self.superuser},
        )

    # -- internals

    def _require_running(self) -> None:
        if self._state != "running":
            raise ClusterStateError(f"the cluster is {self._state}, not running")

    def _pg_ctl(self, action: str, *args: str) -> str:
        return run_command(
            [
                self.binaries.tool("pg_ctl"), action,
                "-D", str(self.data_dir),
                "-w", "-t", str(int(self._start_timeout)),
                *args,
            ],
            cwd=self.base_dir,
            timeout=self._start_timeout + 15,
        )  # fmt: skip

    def _initdb(self, binaries: PgBinaries) -> None:
        base = self.base_dir
        pwfile = base / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        give_to_service_user(pwfile)
        try:
            run_command(
                [
                    binaries.tool("initdb"),
                    "-D", str(self.data_dir),
                    "-U", self.superuser,
                    "--pwfile", str(pwfile),
                    "--auth-local=trust",
                    f"--auth-host={self.auth}",
                    "-E", "UTF8", "--locale=C",
                    "--no-sync",
                ],
                cwd=base,
                timeout=120,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        self.socket_dir.mkdir(mode=0o700)
        give_to_service_user(self.socket_dir)
        hba = (
            "# written by fabric.postgres\n"
            "local   all  all                 trust\n"
            f"host    all  all  127.0.0.1/32    {self.auth}\n"
            f"host    all  all  ::1/128         {self.auth}\n"
        )
        self._write_data_file("pg_hba.conf", hba)
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\ninclude 'fabric.conf'\n")

    def _write_settings(self, port: int) -> None:
        settings: dict[str, str | int | float | bool] = {
            "listen_addresses": self.host,
            "port": port,
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": self.max_connections,
            "password_encryption": "scram-sha-256",
            "fsync": False,
            "synchronous_commit": False,
            "full_page_writes": False,
            "shared_buffers": "32MB",
            "max_wal_size": "256MB",
            "logging_collector": False,
            "log_min_messages": "warning",
        }
        settings.update(self._settings)
        lines = [f"{key} = {_conf_value(value)}" for key, value in settings.items()]
        self._write_data_file("fabric.conf", "\n".join(lines) + "\n")

    def _write_data_file(self, name: str, text: str) -> None:
        path = self.data_dir / name
        path.write_text(text)
        path.chmod(0o600)
        give_to_service_user(path)

    def _start_server(self, binaries: PgBinaries) -> None:
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(attempts):
            port = self._requested_port or free_port(self.host)
            self._port = port
            self._write_settings(port)
            try:
                self._pg_ctl("start", "-l", str(self.log_path))
                return
            except ClusterCommandError as exc:
                log = self._log_tail()
                in_use = "already in use" in log or "could not bind" in log
                if in_use and attempt + 1 < attempts:
                    continue
                raise ClusterStartError(
                    f"PostgreSQL {binaries.version} did not start on {self.host}:{port}: "
                    f"{exc}\n--- server log ---\n{log}"
                ) from None

    def _log_tail(self, size: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"

    def _shutdown(self) -> None:
        pid = self.pid
        for mode in ("fast", "immediate"):
            if not (self.data_dir / "postmaster.pid").exists():
                break
            with contextlib.suppress(ClusterCommandError):
                self._pg_ctl("stop", "-m", mode)
                break
        else:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if pid is not None:  # pg_ctl returns once the pid file is gone; the process exits after
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _pid_alive(pid):
                time.sleep(0.01)

    def _remove_dir(self) -> None:
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0:1] != ["Z"]


def _conf_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + value.replace("'", "''") + "'"
