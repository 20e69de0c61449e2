"""The front door's configuration: the ``postgres`` table of the dbpool config.

Passwords never appear in the configuration: each user names an environment
variable or a file that holds it, as the dbpool ``auth`` secret does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import msgspec

__all__ = ["ADMIN_DATABASES", "PostgresFrontDoorConfig", "PostgresUser", "load_password"]

#: database names that reach the admin console instead of a pool
ADMIN_DATABASES = ("pgbouncer", "fabric")


class PostgresUser(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``users = { app = { password_env = "APP_PASSWORD" }, ci = { auth = "trust" } }``."""

    auth: Literal["scram-sha-256", "trust"] = "scram-sha-256"
    #: environment variable holding the password (scram-sha-256)
    password_env: str | None = None
    #: file holding the password, surrounding whitespace stripped (scram-sha-256)
    password_file: str | None = None
    #: may use the admin console (database ``pgbouncer`` or ``fabric``)
    admin: bool = False

    def __post_init__(self) -> None:
        given = (self.password_env is not None) + (self.password_file is not None)
        if self.auth == "trust" and given:
            raise ValueError("a trust user takes no password_env or password_file")
        if self.auth == "scram-sha-256" and given != 1:
            raise ValueError(
                "a scram-sha-256 user needs exactly one of password_env or password_file"
            )


class PostgresFrontDoorConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """``postgres = { port = 6432, users = {...} }`` in the dbpool service config."""

    #: the virtual port of the workload it listens on (publish it with an ingress rule)
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 6432
    users: dict[str, PostgresUser]
    #: only transaction pooling: a server session per transaction
    pool_mode: Literal["transaction"] = "transaction"
    #: named prepared statements one client may hold
    max_prepared_statements: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 1000
    #: channels one client may LISTEN on
    max_listen_channels: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 100
    #: notification bytes the front door may hold for one client (while a reply to
    #: it is relayed, or while it lags in reading); past it the client is disconnected
    max_notification_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 1 << 20

    def __post_init__(self) -> None:
        if not self.users:
            raise ValueError("postgres.users needs at least one user")


def load_password(name: str, user: PostgresUser) -> str:
    """The password of a scram-sha-256 user, from its variable or file."""
    if user.password_env is not None:
        value = os.environ.get(user.password_env)
        if value is None:
            raise ValueError(
                f"postgres user {name!r}: environment variable {user.password_env} is not set"
            )
        return value.strip()
    assert user.password_file is not None
    try:
        return Path(user.password_file).read_text().strip()
    except OSError as exc:
        raise ValueError(
            f"postgres user {name!r}: cannot read {user.password_file}: {exc.strerror}"
        ) from None
