"""A private PgBouncer in front of a PostgreSQL server, for the benchmarks.

PgBouncer runs in *transaction* pooling mode with ``auth_type =
scram-sha-256``: clients authenticate to PgBouncer with SCRAM. Each ``users``
entry goes to the auth file as given: either a plain-text password, or the
role's SCRAM secret copied from ``pg_authid.rolpassword`` (what production
set-ups do). With a secret, PgBouncer checks a client without deriving a key
itself and logs in to the server by SCRAM pass-through; with a plain-text
password it must run PBKDF2 for every client login, on its single thread.
Like PostgreSQL
it refuses to run as root, so it runs as the ``postgres`` system user when
we are root (see :func:`fabric.postgres.spawn`).

When no ``pgbouncer`` binary exists, :meth:`PgBouncer.start` raises
:class:`~benches.errors.PgBouncerNotInstalled`, which the harness reports as
``skipped: pgbouncer not installed``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import msgspec

from benches.errors import BenchError, PgBouncerNotInstalled
from fabric.postgres import free_port, make_dsn, make_private_dir, service_user, spawn

__all__ = [
    "PgBouncer",
    "PgBouncerStatistics",
    "find_pgbouncer",
    "pgbouncer_version",
    "require_pgbouncer",
]

_FALLBACK_PATHS = ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer", "/usr/local/bin/pgbouncer")


def find_pgbouncer() -> str | None:
    """Path of the ``pgbouncer`` binary, or ``None``."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    for path in _FALLBACK_PATHS:
        if Path(path).is_file():
            return path
    return None


def require_pgbouncer(binary: str | None = None) -> str:
    """The binary to run; raises :class:`PgBouncerNotInstalled` when there is none."""
    binary = binary or find_pgbouncer()
    if binary is None:
        raise PgBouncerNotInstalled()
    if not Path(binary).is_file():
        raise PgBouncerNotInstalled(f"pgbouncer not installed (no {binary})")
    return binary


def pgbouncer_version(binary: str | None = None) -> str | None:
    """``"1.18.0"`` or similar, ``None`` when not installed."""
    binary = binary or find_pgbouncer()
    if binary is None:
        return None
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout
    first = out.splitlines()[0] if out else ""
    return first.removeprefix("PgBouncer ").strip() or None


class PgBouncerStatistics(msgspec.Struct, frozen=True):
    state: Literal["new", "running", "stopped"]
    port: int | None
    pid: int | None
    pool_mode: str
    pool_size: int
    version: str | None


def _quote_userlist(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    """A PgBouncer process of our own on ``127.0.0.1:<free port>``."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        server_host: str,
        server_port: int,
        users: Mapping[str, str],
        pool_mode: Literal["transaction", "session", "statement"] = "transaction",
        pool_size: int = 20,
        max_client_conn: int = 2000,
        port: int | None = None,
        base_dir: Path | None = None,
        binary: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if not users:
            raise ValueError("PgBouncer needs at least one user")
        self.server_host = server_host
        self.server_port = server_port
        self.users = dict(users)
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self._requested_port = port
        self._base_parent = base_dir
        self._binary = binary
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._base: Path | None = None
        self._port: int | None = None
        self._state: Literal["new", "running", "stopped"] = "new"
        self._version: str | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise BenchError("PgBouncer has no port before start()")
        return self._port

    @property
    def version(self) -> str | None:
        return self._version

    @property
    def log_path(self) -> Path:
        if self._base is None:
            raise BenchError("PgBouncer has no directory before start()")
        return self._base / "pgbouncer.log"

    def dsn_for(self, user: str, password: str, database: str) -> str:
        return make_dsn(self.host, self.port, user, password, database)

    def statistics(self) -> PgBouncerStatistics:
        return PgBouncerStatistics(
            state=self._state,
            port=self._port,
            pid=self._proc.pid if self._proc and self._state == "running" else None,
            pool_mode=self.pool_mode,
            pool_size=self.pool_size,
            version=self._version,
        )

    def __repr__(self) -> str:
        return f"<PgBouncer {self._state} {self.host}:{self._port or '-'} mode={self.pool_mode}>"

    def start(self) -> Self:
        binary = require_pgbouncer(self._binary)
        if self._state == "running":
            raise BenchError("PgBouncer is already running")
        self._version = pgbouncer_version(binary)
        self._base = make_private_dir(self._base_parent, prefix="fabric-pgbouncer-")
        self._port = self._requested_port or free_port(self.host)
        config = self._write_config()
        self._proc = spawn([binary, str(config)], cwd=self._base, log_path=self.log_path)
        try:
            self._wait_ready()
        except BaseException:
            self._terminate()
            shutil.rmtree(self._base, ignore_errors=True)
            raise
        self._state = "running"
        return self

    def stop(self) -> None:
        """Stop PgBouncer and delete its directory. Idempotent."""
        if self._state != "running":
            return
        try:
            self._terminate()
        finally:
            if self._base is not None:
                shutil.rmtree(self._base, ignore_errors=True)
            self._state = "stopped"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _write_config(self) -> Path:
        assert self._base is not None
        userlist = self._base / "userlist.txt"
        userlist.write_text(
            "".join(f"{_quote_userlist(u)} {_quote_userlist(p)}\n" for u, p in self.users.items())
        )
        settings = {
            "listen_addr": self.host,
            "listen_port": str(self._port),
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": str(userlist),
            "pool_mode": self.pool_mode,
            "default_pool_size": str(self.pool_size),
            "max_client_conn": str(self.max_client_conn),
            "ignore_startup_parameters": "extra_float_digits",
            "log_connections": "0",
            "log_disconnections": "0",
            "log_pooler_errors": "1",
            "stats_period": "3600",
        }
        body = (
            "[databases]\n"
            f"* = host={self.server_host} port={self.server_port}\n\n"
            "[pgbouncer]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items())
        )
        config = self._base / "pgbouncer.ini"
        config.write_text(body)
        user = service_user()
        for path in (userlist, config):
            path.chmod(0o600)
            if user is not None:
                os.chown(path, user.uid, user.gid)
        return config

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BenchError(f"pgbouncer exited with {self._proc.returncode}: {self._log()}")
            with contextlib.suppress(OSError):
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            time.sleep(0.02)
        raise BenchError(f"pgbouncer did not listen within {self._start_timeout} s: {self._log()}")

    def _log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: immediate shutdown
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
