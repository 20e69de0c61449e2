"""Messages of the dbpool wire protocol, version 1.

Every frame body is one msgpack map whose ``"t"`` key names the message
(msgspec tagged union).  Requests go from client to server, responses back;
each response carries the ``id`` of the request it answers.  ``id`` 0 is
reserved for connection-level errors sent by the server just before it
closes the connection.  ``docs/dbpool-protocol.md`` is the normative text;
keep the two in step.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

__all__ = [
    "Auth",
    "Begin",
    "Challenge",
    "Commit",
    "DatabaseStats",
    "Done",
    "Error",
    "ExecuteMany",
    "Limits",
    "Ping",
    "Pong",
    "PostgresFrontDoorStats",
    "Query",
    "Request",
    "Response",
    "Rollback",
    "Rows",
    "ServerStats",
    "SessionStats",
    "Stats",
    "StatsReply",
]

#: Request ids are chosen by the client; 0 is reserved for the server.
RequestId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
#: Responses may carry id 0 (connection-level error).
ResponseId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
DbName = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]


class _Message(msgspec.Struct, frozen=True, tag_field="t", forbid_unknown_fields=False):
    pass


# --------------------------------------------------------------------------- requests


class Query(_Message, frozen=True, tag="query"):
    """Run one statement; answered by `Rows` (``columns`` empty for DML)."""

    id: RequestId
    db: DbName
    sql: str
    params: tuple[Any, ...] = ()


class ExecuteMany(_Message, frozen=True, tag="execute_many"):
    """Run one statement once per parameter tuple; answered by `Done`."""

    id: RequestId
    db: DbName
    sql: str
    params_seq: tuple[tuple[Any, ...], ...] = ()


class Begin(_Message, frozen=True, tag="begin"):
    """Pin a lease of ``db`` to this client connection and open a transaction."""

    id: RequestId
    db: DbName


class Commit(_Message, frozen=True, tag="commit"):
    id: RequestId


class Rollback(_Message, frozen=True, tag="rollback"):
    id: RequestId


class Ping(_Message, frozen=True, tag="ping"):
    id: RequestId


class Stats(_Message, frozen=True, tag="stats"):
    id: RequestId


class Auth(_Message, frozen=True, tag="auth"):
    """Answer to the server's `Challenge` (protocol 1, minor revision 1).

    ``proof`` is HMAC-SHA256(key=secret, msg=b"fabric-dbpool-auth:" + nonce)."""

    id: RequestId
    method: str
    proof: bytes


Request = Query | ExecuteMany | Begin | Commit | Rollback | Ping | Stats | Auth

# -------------------------------------------------------------------------- responses


class Rows(_Message, frozen=True, tag="rows"):
    id: ResponseId
    columns: list[str]
    rows: list[tuple[Any, ...]]
    rowcount: int


class Done(_Message, frozen=True, tag="done"):
    id: ResponseId
    rowcount: int = -1


class Pong(_Message, frozen=True, tag="pong"):
    id: ResponseId


class DatabaseStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of one database pool (mirrors ``pools.PoolStats``)."""

    kind: str
    size: int = 0
    idle: int = 0
    in_use: int = 0
    waiting: int = 0
    acquire_wait_p50_ms: float = 0.0
    acquire_wait_p99_ms: float = 0.0
    leases_served: int = 0
    timeouts: int = 0
    errors: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    opening: int = 0
    min_size: int = 0
    max_size: int = 0
    statement_errors: int = 0


class ServerStats(msgspec.Struct, frozen=True, kw_only=True):
    """What `DbPoolServer.statistics()` returns and `StatsReply` carries."""

    clients_connected: int
    clients_total: int
    clients_rejected: int
    requests_in_flight: int
    #: connected clients from outside the workload (counted in clients_connected)
    clients_external: int = 0
    #: handshakes refused for a missing or wrong secret
    auth_failures: int = 0
    #: encoded reply bytes held now (results being read + replies not yet written)
    reply_bytes: int = 0
    #: the most one session has held at once since start
    reply_bytes_peak: int = 0
    transactions_open: int
    #: transactions rolled back because their client went away or idled out
    transactions_abandoned: int
    #: replies sent, by request kind ("query", "begin", ...)
    requests: dict[str, int]
    #: error replies sent, by error code (including connection-level ones)
    errors: dict[str, int]
    databases: dict[str, DatabaseStats]
    #: in-process sessions (the typed sql import) open now / opened since start
    local_sessions: int = 0
    local_sessions_total: int = 0
    #: the PostgreSQL front door, when configured (docs/postgres-front-door.md)
    postgres: PostgresFrontDoorStats | None = None
    #: the MySQL front door's counters, when it is configured (docs/mysql-front-door.md)
    mysql: dict[str, Any] | None = None


class PostgresFrontDoorStats(msgspec.Struct, frozen=True, kw_only=True):
    """The PostgreSQL front door: its clients and its pools of raw sessions."""

    port: int
    clients_connected: int
    clients_total: int
    #: refused before authentication (limits, bad startup packets, unknown database)
    clients_rejected: int
    auth_failures: int
    cancel_requests: int
    #: server sessions lent: one per transaction or statement outside a transaction
    leases: int
    #: clients holding a server session now
    clients_active: int
    #: transactions rolled back because their client went away or idled out
    transactions_abandoned: int
    #: ErrorResponses the front door itself sent, by SQLSTATE
    errors: dict[str, int]
    databases: dict[str, DatabaseStats]
    #: bytes read from / written to clients
    bytes_received: int = 0
    bytes_sent: int = 0
    #: named prepared statements the connected clients hold
    prepared_statements: int = 0
    #: (client, channel) LISTEN registrations now, and distinct channels
    listeners: int = 0
    listen_channels: int = 0
    #: dedicated LISTEN server connections open now (one per database listened on)
    listen_connections: int = 0
    #: NotificationResponses received on them / written to clients
    notifications_received: int = 0
    notifications_delivered: int = 0
    #: clients disconnected for leaving too many notifications unread
    notification_overflows: int = 0


class SessionStats(msgspec.Struct, frozen=True, kw_only=True):
    """One client connection, as `DbPoolServer.session_statistics()` reports it."""

    peer: str
    external: bool
    #: requests read from the client (answered or in flight)
    requests_read: int
    requests_in_flight: int
    #: request bytes read but not yet parsed
    bytes_buffered_in: int
    #: encoded reply bytes held now / at most (results being read + replies unwritten)
    reply_bytes: int
    reply_bytes_peak: int


class StatsReply(_Message, frozen=True, tag="stats_reply"):
    id: ResponseId
    stats: ServerStats


class Error(_Message, frozen=True, tag="error"):
    id: ResponseId
    code: str
    sqlstate: str | None
    message: str
    #: for database_error: the database's own code (SQLSTATE for PostgreSQL, the
    #: error number for MySQL/MariaDB, "client" when the driver refused the parameters)
    db_code: str | None = None


class Challenge(_Message, frozen=True, tag="challenge"):
    """Sent once, right after a server hello with status ``auth_required``."""

    id: ResponseId
    method: str
    nonce: bytes


Response = Rows | Done | Pong | StatsReply | Error | Challenge

# ----------------------------------------------------------------------------- limits


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Per-server limits; the first two are announced in the handshake."""

    #: largest request frame body the server accepts (bytes)
    max_frame_size: Annotated[int, msgspec.Meta(ge=64, le=2**32 - 1)] = 16 * 1024 * 1024
    #: requests the server reads ahead per client before it stops reading
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 16
    #: of those, statements outside a transaction that run at once (the others
    #: wait, without a lease): each reads at least its first chunk, a whole row,
    #: before the reply accounting can hold it back, so this bounds what a
    #: client that pipelines large rows and never reads them can make us hold
    max_parallel: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 4
    #: largest response body; a bigger result is replaced by a result_too_large error,
    #: found while the rows are read (the rest is not read)
    max_result_size: Annotated[int, msgspec.Meta(ge=64, le=2**32 - 1)] = 64 * 1024 * 1024
    #: most rows in one result; more are refused with result_too_large while reading
    max_result_rows: Annotated[int, msgspec.Meta(ge=1)] = 1_000_000
    #: a client with no request in flight and no bytes received for this long is closed
    idle_timeout: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    #: a reply not taken by the client within this long closes the connection
    #: (its requests waiting with a lease are cancelled and the leases returned)
    write_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    #: time allowed between accept and a complete client hello
    handshake_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    #: connected clients; more are refused in the handshake
    max_clients: Annotated[int, msgspec.Meta(ge=1)] = 1024
    #: outside a transaction, write the response while the lease is being
    #: reset and returned, so the reply does not wait for the reset's round
    #: trip (False: the lease is back in its pool before the response is sent)
    reply_before_release: bool = True
    #: of those, clients from outside the workload (ingress, real sockets); the
    #: rest stays free for the workload's own components and services
    max_external_clients: Annotated[int, msgspec.Meta(ge=1)] = 256
