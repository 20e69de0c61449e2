"""The dbpool service's statistics as metric families for fabric's metrics endpoint.

``DbPoolService.metrics()`` returns ``server_metrics(self.statistics())``: plain
data in the shape fabric reads from a native service's optional ``metrics()``
(docs/metrics.md), so nothing here imports fabric's metrics code and nothing is
counted on the request path: it is computed from `ServerStats` at scrape time.
Fabric exposes each family as ``fabric_<name>`` with ``workload`` and
``service`` labels added.

Fields of `ServerStats` and `DatabaseStats` known here get a name, a type and
a help text; a numeric field added later and not yet mapped still appears, as
a gauge ``dbpool_<field>`` (or ``dbpool_pool_<field>`` per database).

The PostgreSQL and MySQL front doors (``ServerStats.postgres`` / ``.mysql``)
are families ``dbpool_door_*`` with a ``door`` label (``postgres`` or
``mysql``); the PostgreSQL front door's own pools of raw sessions are
``dbpool_door_pool_*``, shaped as the ``dbpool_pool_*`` families.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .messages import DatabaseStats, PostgresFrontDoorStats, ServerStats

__all__ = ["server_metrics"]

Family = dict[str, Any]

# ServerStats fields: name -> (family, kind, help); fields mapped by hand are listed below
_SERVER: dict[str, tuple[str, str, str]] = {
    "clients_connected": ("dbpool_clients_connected", "gauge", "Clients connected now"),
    "clients_external": (
        "dbpool_clients_external",
        "gauge",
        "Connected clients from outside the workload (through an ingress port)",
    ),
    "clients_total": ("dbpool_clients", "counter", "Clients accepted since start"),
    "clients_rejected": (
        "dbpool_clients_rejected",
        "counter",
        "Clients refused in the handshake (max_clients, bad hello)",
    ),
    "auth_failures": (
        "dbpool_auth_failures",
        "counter",
        "Handshakes refused for a missing or wrong secret",
    ),
    "requests_in_flight": ("dbpool_requests_in_flight", "gauge", "Requests being served now"),
    "reply_bytes": (
        "dbpool_reply_bytes",
        "gauge",
        "Encoded reply bytes held now (results being read, replies not yet written)",
    ),
    "reply_bytes_peak": (
        "dbpool_reply_bytes_peak",
        "gauge",
        "The most reply bytes one session has held at once since start",
    ),
    "transactions_open": ("dbpool_transactions_open", "gauge", "Transactions open now"),
    "transactions_abandoned": (
        "dbpool_transactions_abandoned",
        "counter",
        "Transactions rolled back because their client went away or idled out",
    ),
    "local_sessions": (
        "dbpool_local_sessions",
        "gauge",
        "In-process sessions (the typed fabric:dbpool/sql import) open now",
    ),
    "local_sessions_total": (
        "dbpool_local_sessions_opened",
        "counter",
        "In-process sessions opened since start",
    ),
}

# DatabaseStats fields: name -> (family, kind, help, extra labels)
_POOL: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "idle": ("dbpool_pool_connections", "gauge", "", {"state": "idle"}),
    "in_use": ("dbpool_pool_connections", "gauge", "", {"state": "in_use"}),
    "opening": ("dbpool_pool_connections", "gauge", "", {"state": "opening"}),
    "min_size": ("dbpool_pool_size_limit", "gauge", "", {"bound": "min"}),
    "max_size": ("dbpool_pool_size_limit", "gauge", "", {"bound": "max"}),
    "waiting": (
        "dbpool_pool_waiting",
        "gauge",
        "Lease requests waiting for a connection now",
        {},
    ),
    "leases_served": ("dbpool_pool_leases", "counter", "Leases handed out since start", {}),
    "timeouts": (
        "dbpool_pool_acquire_timeouts",
        "counter",
        "Lease requests that gave up waiting (acquire_timeout)",
        {},
    ),
    "errors": (
        "dbpool_pool_connection_errors",
        "counter",
        "Connection failures: connect, lost mid-lease, health check, reset",
        {},
    ),
    "statement_errors": (
        "dbpool_pool_statement_errors",
        "counter",
        "Statements the database refused (errors raised to lease holders)",
        {},
    ),
    "connections_opened": (
        "dbpool_pool_connections_opened",
        "counter",
        "Database connections opened since start",
        {},
    ),
    "connections_closed": (
        "dbpool_pool_connections_closed",
        "counter",
        "Database connections closed since start",
        {},
    ),
    "acquire_wait_p50_ms": (
        "dbpool_pool_acquire_wait_recent_seconds",
        "gauge",
        "",
        {"quantile": "0.5"},
    ),
    "acquire_wait_p99_ms": (
        "dbpool_pool_acquire_wait_recent_seconds",
        "gauge",
        "",
        {"quantile": "0.99"},
    ),
}

_HELP = {
    "dbpool_pool_connections": "Database connections of a pool now, by state",
    "dbpool_pool_size_limit": "A pool's min_size and max_size",
    "dbpool_pool_acquire_wait_recent_seconds": (
        "Wait for a lease, quantiles over the last 1024 leases served"
    ),
}

_SKIPPED = frozenset({"size", "kind"})  # size = idle + in_use; kind is a label

# front door fields (either door): name -> (family, kind, help)
_DOOR: dict[str, tuple[str, str, str]] = {
    "clients_connected": ("dbpool_door_clients_connected", "gauge", "Front door clients now"),
    "clients_external": (
        "dbpool_door_clients_external",
        "gauge",
        "Front door clients from outside the workload (through an ingress port) now",
    ),
    "clients_active": (
        "dbpool_door_clients_active",
        "gauge",
        "Front door clients holding a server session now",
    ),
    "clients_total": ("dbpool_door_clients", "counter", "Front door clients accepted"),
    "clients_rejected": (
        "dbpool_door_clients_rejected",
        "counter",
        "Front door clients refused before login (limits, bad startup, unknown database)",
    ),
    "auth_failures": ("dbpool_door_auth_failures", "counter", "Front door logins refused"),
    "cancel_requests": ("dbpool_door_cancel_requests", "counter", "Cancel requests received"),
    "leases": (
        "dbpool_door_leases",
        "counter",
        "Server sessions lent to front door clients (one per transaction or statement)",
    ),
    "transactions_open": (
        "dbpool_door_transactions_open",
        "gauge",
        "Front door clients in an open transaction now",
    ),
    "transactions_abandoned": (
        "dbpool_door_transactions_abandoned",
        "counter",
        "Front door transactions rolled back because their client went away",
    ),
    "prepared_statements": (
        "dbpool_door_prepared_statements",
        "gauge",
        "Named prepared statements the front door's clients hold now",
    ),
    "bytes_received": ("dbpool_door_received_bytes", "counter", "Bytes read from clients"),
    "bytes_sent": ("dbpool_door_sent_bytes", "counter", "Bytes written to clients"),
    "listeners": (
        "dbpool_door_listeners",
        "gauge",
        "LISTEN registrations (client, channel) now",
    ),
    "listen_channels": (
        "dbpool_door_listen_channels",
        "gauge",
        "Distinct channels listened on now",
    ),
    "listen_connections": (
        "dbpool_door_listen_connections",
        "gauge",
        "Dedicated LISTEN server connections up now (one per database listened on)",
    ),
    "notifications_received": (
        "dbpool_door_notifications_received",
        "counter",
        "Notifications received on the dedicated LISTEN connections",
    ),
    "notifications_delivered": (
        "dbpool_door_notifications_delivered",
        "counter",
        "Notifications written to listening clients",
    ),
    "notification_overflows": (
        "dbpool_door_notification_overflows",
        "counter",
        "Clients disconnected for leaving more than max_notification_bytes unread",
    ),
}
_DOOR_KEYED = {
    "errors": (
        "dbpool_door_errors",
        "code",
        "Errors the front door itself sent, by SQLSTATE or MySQL error number",
    ),
    "commands": ("dbpool_door_commands", "command", "MySQL commands received, by command"),
}


def server_metrics(stats: ServerStats) -> list[Family]:
    """Metric families (plain data) from one `ServerStats` snapshot."""
    families: dict[str, Family] = {}

    def add(name: str, kind: str, help: str, value: float, labels: dict[str, str]) -> None:
        family = families.setdefault(
            name, {"name": name, "kind": kind, "help": help, "samples": []}
        )
        family["samples"].append({"value": float(value), "labels": labels})

    for field, value in msgspec.structs.asdict(stats).items():
        if field in _SERVER:
            name, kind, help = _SERVER[field]
            add(name, kind, help, value, {})
        elif isinstance(value, int | float) and not isinstance(value, bool):
            add(f"dbpool_{field}", "gauge", f"ServerStats.{field}", value, {})
    for kind, counts in (("request", stats.requests), ("code", stats.errors)):
        name = "dbpool_requests" if kind == "request" else "dbpool_errors"
        help = (
            "Replies sent, by request kind"
            if kind == "request"
            else ("Error replies sent, by error code (connection-level ones too)")
        )
        families.setdefault(name, {"name": name, "kind": "counter", "help": help, "samples": []})
        for key, count in sorted(counts.items()):
            add(name, "counter", help, count, {kind: key})
    for database, db in sorted(stats.databases.items()):
        _pool(add, database, db)
    if stats.postgres is not None:
        _door(add, "postgres", stats.postgres)
    if stats.mysql is not None:
        _door(add, "mysql", stats.mysql)
    return list(families.values())


def _door(add: Any, door: str, stats: PostgresFrontDoorStats | dict[str, Any]) -> None:
    fields = msgspec.structs.asdict(stats) if not isinstance(stats, dict) else stats
    labels = {"door": door}
    for field, value in fields.items():
        if field in _DOOR:
            name, kind, help = _DOOR[field]
            add(name, kind, help, value, labels)
        elif field in _DOOR_KEYED and isinstance(value, dict):
            name, key, help = _DOOR_KEYED[field]
            for k, count in sorted(value.items()):
                add(name, "counter", help, count, {**labels, key: str(k)})
    if isinstance(stats, PostgresFrontDoorStats):
        for database, db in sorted(stats.databases.items()):
            _pool(add, database, db, prefix="dbpool_door_pool_", extra=labels)


def _pool(
    add: Any,
    database: str,
    db: DatabaseStats,
    *,
    prefix: str = "dbpool_pool_",
    extra: dict[str, str] | None = None,
) -> None:
    base = {**(extra or {}), "database": database, "kind": db.kind}
    for field, value in msgspec.structs.asdict(db).items():
        if field in _SKIPPED:
            continue
        if field in _POOL:
            name, kind, help, more = _POOL[field]
            if field.endswith("_ms"):
                value = value / 1000.0
            help = help or _HELP[name]
            add(prefix + name.removeprefix("dbpool_pool_"), kind, help, value, {**base, **more})
        elif isinstance(value, int | float) and not isinstance(value, bool):
            add(f"{prefix}{field}", "gauge", f"DatabaseStats.{field}", value, base)
