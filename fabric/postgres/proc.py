"""Processes and users: PostgreSQL refuses to run as root, so its tools run as ``postgres``."""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

from .errors import ClusterCommandError, PgClusterError

_SERVICE_USER_NAME = "postgres"

# ----------------------------------------------------------- process helpers


class ServiceUser(msgspec.Struct, frozen=True):
    """The unprivileged system user that server processes run as when we are root."""

    name: str
    uid: int
    gid: int


def service_user() -> ServiceUser | None:
    """The user to run PostgreSQL tools as: ``postgres`` when euid is 0, else ``None``."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(_SERVICE_USER_NAME)
    except KeyError:
        raise PgClusterError(
            "running as root, but there is no 'postgres' system user to run the server as"
        ) from None
    return ServiceUser(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def make_private_dir(parent: Path | None = None, prefix: str = "fabric-") -> Path:
    """Create a fresh 0700 directory owned by the service user (or by us)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    give_to_service_user(path)
    return path


def give_to_service_user(path: Path) -> None:
    user = service_user()
    if user is not None:
        os.chown(path, user.uid, user.gid)


def _child_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    user = service_user()
    if user is not None:
        env["HOME"] = pwd.getpwuid(user.uid).pw_dir
        env["USER"] = env["LOGNAME"] = user.name
    if extra:
        env.update(extra)
    return env


def run_command(
    argv: Sequence[str],
    *,
    cwd: Path,
    as_service_user: bool = True,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 60.0,
) -> str:
    """Run a tool (as the service user when root); return its combined output.

    Raises :class:`ClusterCommandError` on a non-zero exit status.
    """
    user = service_user() if as_service_user else None
    try:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            env=_child_env(env),
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            user=user.uid if user else None,
            group=user.gid if user else None,
            extra_groups=[] if user else None,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output if isinstance(exc.output, str) else ""
        raise ClusterCommandError(argv, -1, f"timed out after {timeout} s\n{out}") from None
    if proc.returncode != 0:
        raise ClusterCommandError(argv, proc.returncode, proc.stdout or "")
    return proc.stdout or ""


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running server process as the service user, output to ``log_path``."""
    user = service_user()
    with open(log_path, "ab") as log:
        if user is not None:
            os.chown(log_path, user.uid, user.gid)
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=_child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user.uid if user else None,
            group=user.gid if user else None,
            extra_groups=[] if user else None,
            start_new_session=True,
        )
