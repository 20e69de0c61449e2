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
"""

from __future__ import annotations

from typing import Any

import msgspec

from .messages import DatabaseStats, ServerStats

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
    return list(families.values())


def _pool(add: Any, database: str, db: DatabaseStats) -> None:
    base = {"database": database, "kind": db.kind}
    for field, value in msgspec.structs.asdict(db).items():
        if field in _SKIPPED:
            continue
        if field in _POOL:
            name, kind, help, extra = _POOL[field]
            if field.endswith("_ms"):
                value = value / 1000.0
            add(name, kind, help or _HELP[name], value, {**base, **extra})
        elif isinstance(value, int | float) and not isinstance(value, bool):
            add(f"dbpool_pool_{field}", "gauge", f"DatabaseStats.{field}", value, base)
