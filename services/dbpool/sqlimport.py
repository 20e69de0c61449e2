"""The host side of the typed ``fabric:dbpool/sql`` import (docs/sql-import.md).

The dbpool service offers it (``DbPoolService.host_imports``): a component
that imports ``fabric:dbpool/sql`` (world ``sql-command`` of
``fabric/wit/fabric.wit``) gets the interface defined in its own linker when
the workload loads; a component that does not import it is unaffected.  Each
``connection`` resource the guest opens is a `LocalSession` of the dbpool
service listening on the requested port of the workload: the service keeps
owning pools, leases, transactions, limits and statistics; no socket and no
encoding are involved.  The service instance is looked up at ``open`` time
(native services publish themselves through ``ServiceContext.publish_handle``),
so a restarted service is picked up by the next invocation.

The connection's lifetime is the invocation's: when the guest drops it, or the
store goes away after a return, a trap or a deadline, the session closes and
an open transaction is rolled back and its lease returned.

Values cross the boundary as the WIT ``value`` variant, lifted and lowered by
the engine as ``(case, payload)`` tuples; `to_wit` and `from_wit` convert
between those and what the drivers take and return.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, cast

import msgspec

from fabric.engine import Err, HostInterface, HostResource
from pools import QueryResult

from .client import DbPoolError
from .local import LocalSession

__all__ = [
    "SQL_INTERFACE",
    "SqlBackend",
    "SqlConnection",
    "SqlImport",
    "find_backend",
    "from_wit",
    "rows_to_wit",
    "sql_interface",
    "to_wit",
]

#: The interface name components import (unversioned).
SQL_INTERFACE = "fabric:dbpool/sql"

WitValue = tuple[str, Any]

_S64_MIN = -(2**63)
_S64_MAX = 2**63 - 1


class SqlBackend(Protocol):
    """What serves the import: the dbpool service (``DbPoolService``)."""

    @property
    def port(self) -> int: ...

    def open_session(self) -> LocalSession: ...


# ------------------------------------------------------------------ values


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


def _json(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def _interval(v: datetime.timedelta) -> dict[str, int]:
    return {"days": v.days, "seconds": v.seconds, "microseconds": v.microseconds}


def _int(v: int) -> WitValue:
    if _S64_MIN <= v <= _S64_MAX:
        return ("int64", v)
    return ("decimal", str(v))


_TO_WIT: dict[type, Callable[[Any], WitValue]] = {
    type(None): lambda v: ("null", None),
    bool: lambda v: ("boolean", v),
    int: _int,
    float: lambda v: ("float64", v),
    str: lambda v: ("text", v),
    bytes: lambda v: ("bytes", v),
    bytearray: lambda v: ("bytes", bytes(v)),
    memoryview: lambda v: ("bytes", bytes(v)),
    decimal.Decimal: lambda v: ("decimal", str(v)),
    datetime.datetime: lambda v: ("timestamp", v.isoformat()),
    datetime.date: lambda v: ("date", v.isoformat()),
    datetime.time: lambda v: ("time", v.isoformat()),
    datetime.timedelta: lambda v: ("interval", _interval(v)),
    uuid.UUID: lambda v: ("uuid", str(v)),
    list: lambda v: ("json", _json(v)),
    tuple: lambda v: ("json", _json(list(v))),
    dict: lambda v: ("json", _json(v)),
}
# Subclasses (asyncpg's UUID, IntEnum, pendulum datetimes, ...) in this order.
_BASES: tuple[type, ...] = (
    bool,
    int,
    float,
    str,
    decimal.Decimal,
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    bytes,
    bytearray,
    memoryview,
    list,
    tuple,
    dict,
)


def to_wit(value: Any) -> WitValue:
    """A driver value as a case of the WIT ``value`` variant.

    Integers outside s64 become ``decimal``; arrays and maps ``json``; a value
    of any other type (inet, ranges, bit strings, ...) its ``str()`` as ``text``.
    """
    conv = _TO_WIT.get(type(value))
    if conv is not None:
        return conv(value)
    for base in _BASES:
        if isinstance(value, base):
            return _TO_WIT[base](value)
    if isinstance(value, set | frozenset):
        return ("json", _json(sorted(value, key=str)))
    return ("text", str(value))


def _from_interval(v: Mapping[str, int]) -> datetime.timedelta:
    return datetime.timedelta(days=v["days"], seconds=v["seconds"], microseconds=v["microseconds"])


_FROM_WIT: dict[str, Callable[[Any], Any]] = {
    "null": lambda v: None,
    "boolean": bool,
    "int64": int,
    "float64": float,
    "text": str,
    "bytes": bytes,
    "decimal": decimal.Decimal,
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
    "timestamp": datetime.datetime.fromisoformat,
    "interval": _from_interval,
    "uuid": uuid.UUID,
    "json": json.loads,
}


def from_wit(value: WitValue) -> Any:
    """A case of the WIT ``value`` variant as the Python value the drivers take.

    Raises ``ValueError`` for malformed text (a date that is no date, ...).
    """
    case, payload = value
    try:
        conv = _FROM_WIT[case]
    except KeyError:
        raise ValueError(f"unknown value case {case!r}") from None
    try:
        return conv(payload)
    except (ValueError, ArithmeticError, TypeError, KeyError) as exc:
        raise ValueError(f"malformed {case} value {payload!r}: {exc}") from None


def params_from_wit(params: Iterable[WitValue]) -> list[Any]:
    return [from_wit(p) for p in params]


def rows_to_wit(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], rowcount: int
) -> dict[str, Any]:
    """The WIT ``rows`` record for a statement's result."""
    return {
        "columns": list(columns),
        "rows": [[to_wit(v) for v in row] for row in rows],
        "rowcount": rowcount,
    }


def error_to_wit(exc: DbPoolError) -> dict[str, Any]:
    """The WIT ``sql-error`` record for an error of the service."""
    return {
        "code": exc.code,
        "sqlstate": exc.sqlstate,
        "db-code": exc.db_code,
        "message": exc.message,
    }


def _invalid(exc: ValueError) -> Err:
    return Err(error_to_wit(DbPoolError("invalid_value", None, str(exc))))


# ------------------------------------------------------------------ the host


class SqlConnection(HostResource):
    """The ``connection`` resource: one `LocalSession`, closed with the handle."""

    def __init__(self, session: LocalSession) -> None:
        self.session = session

    def close(self) -> None:
        self.session.close()


def find_backend(handles: Iterable[Any], port: int) -> SqlBackend | None:
    """The published dbpool service listening on ``port``, if any."""
    for handle in handles:
        # Duck-typed: an isinstance check against the runtime-checkable protocol
        # costs tens of microseconds, on every open.
        if getattr(handle, "open_session", None) is not None and handle.port == port:
            return cast("SqlBackend", handle)
    return None


def sql_interface(
    resolve: Callable[[int], SqlBackend | None], name: str = SQL_INTERFACE
) -> HostInterface:
    """The host side of ``fabric:dbpool/sql``; ``resolve(port)`` finds the service."""
    iface = HostInterface(name)
    iface.resource("connection", SqlConnection)

    def open_(cx: Any, port: int) -> SqlConnection:
        backend = resolve(port)
        if backend is None:
            msg = f"no dbpool service listens on port {port} in this workload"
            raise Err(error_to_wit(DbPoolError("disconnected", None, msg)))
        try:
            return SqlConnection(backend.open_session())
        except DbPoolError as exc:
            raise Err(error_to_wit(exc)) from None

    async def run(conn: SqlConnection, db: str, sql: str, params: list[WitValue]) -> QueryResult:
        try:
            args = params_from_wit(params)
        except ValueError as exc:
            raise _invalid(exc) from None
        try:
            return await conn.session.query(db, sql, args)
        except DbPoolError as exc:
            raise Err(error_to_wit(exc)) from None

    async def query(cx: Any, conn: SqlConnection, db: str, sql: str, params: list[WitValue]) -> Any:
        res = await run(conn, db, sql, params)
        return rows_to_wit(res.columns, res.rows, res.rowcount)

    async def execute(
        cx: Any, conn: SqlConnection, db: str, sql: str, params: list[WitValue]
    ) -> int:
        return (await run(conn, db, sql, params)).rowcount

    async def execute_many(
        cx: Any, conn: SqlConnection, db: str, sql: str, params_seq: list[list[WitValue]]
    ) -> int:
        try:
            seq = [params_from_wit(p) for p in params_seq]
        except ValueError as exc:
            raise _invalid(exc) from None
        try:
            return await conn.session.execute_many(db, sql, seq)
        except DbPoolError as exc:
            raise Err(error_to_wit(exc)) from None

    async def begin(cx: Any, conn: SqlConnection, db: str) -> None:
        try:
            await conn.session.begin(db)
        except DbPoolError as exc:
            raise Err(error_to_wit(exc)) from None

    async def commit(cx: Any, conn: SqlConnection) -> None:
        try:
            await conn.session.commit()
        except DbPoolError as exc:
            raise Err(error_to_wit(exc)) from None

    async def rollback(cx: Any, conn: SqlConnection) -> None:
        try:
            await conn.session.rollback()
        except DbPoolError as exc:
            raise Err(error_to_wit(exc)) from None

    def stats(cx: Any, conn: SqlConnection) -> str:
        try:
            return msgspec.json.encode(conn.session.statistics()).decode()
        except DbPoolError as exc:
            raise Err(error_to_wit(exc)) from None

    iface.func("[static]connection.open", open_, is_async=False)
    iface.func("[method]connection.query", query, is_async=True)
    iface.func("[method]connection.execute", execute, is_async=True)
    iface.func("[method]connection.execute-many", execute_many, is_async=True)
    iface.func("[method]connection.begin", begin, is_async=True)
    iface.func("[method]connection.commit", commit, is_async=True)
    iface.func("[method]connection.rollback", rollback, is_async=True)
    iface.func("[method]connection.stats", stats, is_async=False)
    return iface


class SqlImport:
    """The `fabric.workload.native.HostImport` the dbpool service offers: the
    import, served by whichever published service listens on the port the
    guest opens."""

    interface = SQL_INTERFACE

    def __call__(self, handles: Callable[[], Iterable[Any]], name: str) -> HostInterface:
        return sql_interface(lambda port: find_backend(handles(), port), name)

    def __repr__(self) -> str:
        return f"<SqlImport {self.interface}>"
