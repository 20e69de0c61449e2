"""The admin console: PgBouncer's ``SHOW`` commands as result sets, for admin users
who connect to the database ``pgbouncer`` (or ``fabric``) on the front door.

``SHOW POOLS``, ``SHOW STATS``, ``SHOW CLIENTS``, ``SHOW SERVERS``,
``SHOW DATABASES``, ``SHOW HELP``; anything else gets an ErrorResponse. Values
are sent as text (every column is declared ``text``), over the simple query
protocol only, as PgBouncer's console does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pools import PgWirePool

from .relay import ProtocolViolation
from .wire import I16, I32, error_response, message, ready_for_query

__all__ = ["COMMANDS", "AdminConsole"]

_TEXT_OID = 25
COMMANDS = ("POOLS", "STATS", "CLIENTS", "SERVERS", "DATABASES", "HELP")


class _ClientView(Protocol):
    pid: int
    user: str
    database: str
    lease: Any


class FrontDoorView(Protocol):
    """What the console reads of the front door."""

    pools: dict[str, PgWirePool]
    leases: int

    def clients(self) -> Sequence[_ClientView]: ...


def result_set(columns: Sequence[str], rows: Sequence[Sequence[object]], tag: str) -> bytes:
    """RowDescription, DataRows and CommandComplete for text columns."""
    desc = I16.pack(len(columns)) + b"".join(
        name.encode()
        + b"\0"
        + I32.pack(0)
        + I16.pack(0)
        + I32.pack(_TEXT_OID)
        + I16.pack(-1)
        + I32.pack(-1)
        + I16.pack(0)
        for name in columns
    )
    out = [message(b"T", desc)]
    for row in rows:
        cells = [b"" if v is None else str(v).encode() for v in row]
        body = I16.pack(len(cells)) + b"".join(
            I32.pack(-1) if v is None else I32.pack(len(c)) + c
            for v, c in zip(row, cells, strict=True)
        )
        out.append(message(b"D", body))
    out.append(message(b"C", tag.encode() + b"\0"))
    return b"".join(out)


class AdminConsole:
    def __init__(self, door: FrontDoorView) -> None:
        self._door = door

    def __repr__(self) -> str:
        return f"<AdminConsole commands={len(COMMANDS)}>"

    def answer(self, sql: str) -> bytes:
        """The reply to one simple query (without its ReadyForQuery)."""
        words = sql.strip().rstrip(";").split()
        if len(words) != 2 or words[0].upper() != "SHOW" or words[1].upper() not in COMMANDS:
            return error_response(
                "42601",
                f"unsupported admin command: {sql.strip()[:80]!r}",
                hint="SHOW " + " | ".join(COMMANDS),
            )
        what = words[1].upper()
        door = self._door
        if what == "HELP":
            return result_set(["command"], [[f"SHOW {c}"] for c in COMMANDS], "SHOW")
        if what == "POOLS":
            rows = []
            for name, pool in door.pools.items():
                s = pool.statistics()
                active = sum(1 for c in door.clients() if c.database == name and c.lease)
                waiting = s.waiting
                clients = sum(1 for c in door.clients() if c.database == name)
                rows.append(
                    [
                        name,
                        "*",
                        clients - active - waiting,
                        active,
                        waiting,
                        s.in_use,
                        s.idle,
                        s.opening,
                        s.max_size,
                        "transaction",
                    ]
                )
            cols = [
                "database",
                "user",
                "cl_idle",
                "cl_active",
                "cl_waiting",
                "sv_active",
                "sv_idle",
                "sv_opening",
                "max_size",
                "pool_mode",
            ]
            return result_set(cols, rows, "SHOW")
        if what == "STATS":
            rows = []
            for name, pool in door.pools.items():
                s = pool.statistics()
                rows.append(
                    [
                        name,
                        s.leases_served,
                        s.acquire_wait_p50_ms,
                        s.acquire_wait_p99_ms,
                        s.timeouts,
                        s.errors,
                        s.statement_errors,
                        s.connections_opened,
                        s.connections_closed,
                    ]
                )
            cols = [
                "database",
                "leases",
                "wait_p50_ms",
                "wait_p99_ms",
                "timeouts",
                "errors",
                "statement_errors",
                "connections_opened",
                "connections_closed",
            ]
            return result_set(cols, rows, "SHOW")
        if what == "CLIENTS":
            rows = [
                [
                    c.pid,
                    c.user,
                    c.database,
                    "active" if c.lease else "idle",
                    c.lease.connection.pid if c.lease else None,
                ]
                for c in door.clients()
            ]
            return result_set(["pid", "user", "database", "state", "server_pid"], rows, "SHOW")
        if what == "SERVERS":
            rows = []
            for c in door.clients():
                if c.lease is not None:
                    conn = c.lease.connection
                    rows.append([conn.pid, c.database, "active", c.pid, len(conn.prepared)])
            return result_set(["pid", "database", "state", "client_pid", "prepared"], rows, "SHOW")
        rows = [
            [name, p.config.host, p.config.resolved_port, p.config.database, p.config.max_size]
            for name, p in door.pools.items()
        ]
        return result_set(["name", "host", "port", "database", "max_size"], rows, "SHOW")

    async def serve(self, inp: Any, reader: Any, writer: Any) -> None:
        """Answer simple queries until the client leaves."""
        while True:
            kind, body = await inp.typed(64 * 1024)
            if kind == b"X":
                return
            if kind != b"Q":
                raise ProtocolViolation("08P01", "the admin console takes simple queries only")
            sql = body.rstrip(b"\0").decode(errors="replace")
            writer.write(self.answer(sql) + ready_for_query())
            await writer.drain()
