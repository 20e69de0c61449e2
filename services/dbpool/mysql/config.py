"""Configuration of the MySQL front door: the ``mysql`` table of the dbpool config."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["MySQLConfig", "MySQLUser"]


class MySQLUser(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One account clients log in as (the front door's own, not the database's)."""

    password: str
    #: how the client proves it knows the password
    plugin: Literal["mysql_native_password", "caching_sha2_password"] = "mysql_native_password"
    #: the dbpool databases (names in ``databases``) this user may use; None: all MySQL ones
    databases: list[str] | None = None
    #: used when the client names no database; None: the only (or first) allowed one
    database: str | None = None


class MySQLConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``mysql = { port = 3306, users = { app = { password = "..." } } }``."""

    users: dict[str, MySQLUser]
    #: the virtual port it listens on (declare it in the service's ``ports``)
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 3306
    #: largest command a client may send (bytes); a larger one is refused with an ERR packet
    max_allowed_packet: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 16 * 1024 * 1024
    #: connected clients; more are refused with ERR 1040 in the handshake
    max_clients: Annotated[int, msgspec.Meta(ge=1)] = 512
    #: of those, clients from outside the workload (ingress)
    max_external_clients: Annotated[int, msgspec.Meta(ge=1)] = 128
    #: prepared statements one client may hold
    max_prepared_statements: Annotated[int, msgspec.Meta(ge=1)] = 256
    #: seconds a client may stay silent (in a transaction or not) before it is closed
    idle_timeout: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    #: seconds a client may take to accept a reply (a result it does not read
    #: closes the connection, and its server connection is discarded)
    write_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    #: seconds from accept to a complete login
    handshake_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    #: the version string announced in the greeting
    server_version: str = "5.7.99-fabric"
