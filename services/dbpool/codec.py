"""Value mapping between Python/database values and the wire (protocol v1).

msgpack carries nil, bool, int, float, str, bin, array and map natively.
Six more types travel as msgpack *ext* values with an application code and
a small payload (the guest SDK implements the same table by hand):

====  ==========  ==================================================
code  type        payload
====  ==========  ==================================================
1     Decimal     ASCII ``str(value)`` ("1.50", "-Infinity", "NaN");
                  also integers outside [-2**63, 2**64 - 1]
2     date        ISO 8601 ``YYYY-MM-DD``
3     time        ``time.isoformat()`` (offset kept when present)
4     datetime    ``datetime.isoformat()`` (naive stays naive)
5     timedelta   3 int32s, big-endian: days, seconds, microseconds
6     UUID        16 raw bytes
====  ==========  ==================================================

Anything else a driver returns is sent as its ``str()`` form (IP
addresses, ranges, bit strings, ...); JSON columns arrive as the text the
driver gives (a str).
"""

from __future__ import annotations

import datetime
import decimal
import struct
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from msgspec.msgpack import Ext

__all__ = [
    "EXT_DATE",
    "EXT_DATETIME",
    "EXT_DECIMAL",
    "EXT_TIME",
    "EXT_TIMEDELTA",
    "EXT_UUID",
    "ext_hook",
    "row_to_wire",
    "rows_to_wire",
    "to_wire",
]

EXT_DECIMAL = 1
EXT_DATE = 2
EXT_TIME = 3
EXT_DATETIME = 4
EXT_TIMEDELTA = 5
EXT_UUID = 6

_TIMEDELTA = struct.Struct(">iii")
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_NATIVE: frozenset[type] = frozenset({float, str, bytes, bool, type(None)})


def _ascii(code: int, text: str) -> Ext:
    return Ext(code, text.encode("ascii"))


def _enc_timedelta(v: datetime.timedelta) -> Ext:
    return Ext(EXT_TIMEDELTA, _TIMEDELTA.pack(v.days, v.seconds, v.microseconds))


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    decimal.Decimal: lambda v: _ascii(EXT_DECIMAL, str(v)),
    datetime.datetime: lambda v: _ascii(EXT_DATETIME, v.isoformat()),
    datetime.date: lambda v: _ascii(EXT_DATE, v.isoformat()),
    datetime.time: lambda v: _ascii(EXT_TIME, v.isoformat()),
    datetime.timedelta: _enc_timedelta,
    uuid.UUID: lambda v: Ext(EXT_UUID, v.bytes),
    bytearray: bytes,
    memoryview: bytes,
}
# Subclasses (pendulum datetimes, asyncpg's UUID, ...) are matched in this order.
_BASES: tuple[type, ...] = (
    decimal.Decimal,
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    bytearray,
    memoryview,
)


def to_wire(value: Any) -> Any:
    """Return ``value`` in a form msgspec encodes as the documented wire value."""
    t = type(value)
    if t is int:
        if _INT_MIN <= value <= _INT_MAX:
            return value
        return _ascii(EXT_DECIMAL, str(value))
    if t in _NATIVE:
        return value
    enc = _ENCODERS.get(t)
    if enc is not None:
        return enc(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {_key(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, int):  # IntEnum, numpy-like ints, ...
        return to_wire(int(value))
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    for base in _BASES:
        if isinstance(value, base):
            return _ENCODERS[base](value)
    return str(value)


def _key(key: Any) -> Any:
    return key if type(key) in (str, int) else str(key)


def row_to_wire(row: Iterable[Any]) -> tuple[Any, ...]:
    return tuple([to_wire(v) for v in row])


def rows_to_wire(rows: Sequence[Iterable[Any]]) -> list[tuple[Any, ...]]:
    return [row_to_wire(r) for r in rows]


def _text(data: memoryview) -> str:
    return bytes(data).decode("ascii")


def ext_hook(code: int, data: memoryview) -> Any:
    """msgspec ``ext_hook``: turn wire ext values back into Python values.

    Raises ValueError for unknown codes or malformed payloads (the protocol
    layer turns that into a protocol error).
    """
    if code == EXT_DECIMAL:
        d = decimal.Decimal(_text(data))
        return d
    if code == EXT_DATE:
        return datetime.date.fromisoformat(_text(data))
    if code == EXT_TIME:
        return datetime.time.fromisoformat(_text(data))
    if code == EXT_DATETIME:
        return datetime.datetime.fromisoformat(_text(data))
    if code == EXT_TIMEDELTA:
        days, seconds, micros = _TIMEDELTA.unpack(data)
        return datetime.timedelta(days=days, seconds=seconds, microseconds=micros)
    if code == EXT_UUID:
        return uuid.UUID(bytes=bytes(data))
    raise ValueError(f"unknown ext code {code}")
