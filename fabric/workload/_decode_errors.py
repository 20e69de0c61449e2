"""Turn a ``msgspec.ValidationError`` into a field path and a readable message.

msgspec reports ``Expected `int` >= 1 - at `$.workloads[0].components[1].concurrency```.
We keep its path, look up the expected type with ``msgspec.inspect`` and the
offending value in the raw TOML data, and write
``expected an integer >= 1, got 0``.  Unknown keys name the key and suggest
the closest valid one; dict entries that msgspec reports as ``[...]`` are
resolved to the actual key.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
import re
from typing import Any

import msgspec
import msgspec.inspect as mi

from . import units as _units
from ._toml_lines import Path
from .units import DURATION_HINT, SIZE_HINT, ByteSize, Duration

__all__ = ["describe", "format_path", "render_value", "translate"]

_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]|(\[\.\.\.\])")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ANY_KEY = object()


def format_path(path: Path) -> str:
    """``("workloads", 1, "env", "A B")`` → ``workloads[1].env."A B"``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            out += f".{key}" if out else key
    return out


def render_value(value: Any, limit: int = 60) -> str:
    """A value in TOML spelling, shortened: ``true``, ``"5x"``, ``[1, 2]``, ``{ a = 1 }``."""
    text = _render(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = ", ".join(f"{format_path((k,))} = {_render(v)}" for k, v in value.items())
        return "{ " + items + " }"
    if isinstance(value, _dt.date | _dt.time):
        return value.isoformat()
    return repr(value)


def _bound(text: str, ge: Any, gt: Any, le: Any, lt: Any) -> str:
    if ge is not None and le is not None:
        return f"{text} from {ge} to {le}"
    parts = [
        f"{op} {bound}"
        for op, bound in ((">=", ge), (">", gt), ("<=", le), ("<", lt))
        if bound is not None
    ]
    return f"{text} {' and '.join(parts)}" if parts else text


def describe(t: mi.Type) -> str:
    """What a value of type ``t`` looks like, for "expected ..." messages."""
    match t:
        case mi.BoolType():
            return "true or false"
        case mi.IntType():
            return _bound("an integer", t.ge, t.gt, t.le, t.lt)
        case mi.FloatType():
            return _bound("a number", t.ge, t.gt, t.le, t.lt)
        case mi.StrType():
            return "a non-empty string" if (t.min_length or 0) > 0 else "a string"
        case mi.LiteralType():
            return "one of " + ", ".join(render_value(v) for v in t.values)
        case mi.ListType() | mi.VarTupleType() | mi.TupleType() | mi.SetType():
            return "an array"
        case mi.DictType() | mi.StructType():
            return "a table"
        case mi.CustomType(cls=cls) if cls is Duration:
            return DURATION_HINT
        case mi.CustomType(cls=cls) if cls is ByteSize:
            return SIZE_HINT
        case mi.UnionType():
            return " or ".join(describe(m) for m in t.types if not isinstance(m, mi.NoneType))
        case _:
            return "a value"


def _parse_msgspec_path(text: str) -> list[Any]:
    parts: list[Any] = []
    for match in _SEGMENT.finditer(text.removeprefix("$")):
        if match.group(1) is not None:
            parts.append(match.group(1))
        elif match.group(2) is not None:
            parts.append(int(match.group(2)))
        else:
            parts.append(_ANY_KEY)
    return parts


def _unwrap(t: mi.Type) -> mi.Type:
    """The container member of an optional/union type, for walking into it."""
    if isinstance(t, mi.UnionType):
        for member in t.types:
            if isinstance(member, mi.StructType | mi.DictType | mi.ListType | mi.VarTupleType):
                return member
    return t


def _child(t: mi.Type, part: Any) -> mi.Type:
    t = _unwrap(t)
    if isinstance(t, mi.StructType):
        for field in t.fields:
            if field.encode_name == part:
                return field.type
        return mi.AnyType()
    if isinstance(t, mi.DictType):
        return t.value_type
    if isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType):
        return t.item_type
    return mi.AnyType()


def _conforms(value: Any, t: mi.Type) -> bool:
    match t:
        case mi.StrType():
            return isinstance(value, str)
        case mi.BoolType():
            return isinstance(value, bool)
        case mi.IntType():
            return isinstance(value, int) and not isinstance(value, bool)
        case mi.FloatType():
            return isinstance(value, int | float) and not isinstance(value, bool)
        case mi.StructType():
            try:
                msgspec.convert(value, t.cls, dec_hook=_units.dec_hook)
            except (msgspec.ValidationError, RecursionError):
                return False
            return True
        case _:
            return True


def translate(error: msgspec.ValidationError, raw: Any, root: type) -> tuple[Path, str]:
    """The field path and message for ``error`` raised converting ``raw`` into ``root``."""
    text = str(error)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        message, where = text, "$`"
    parts = _parse_msgspec_path(where.removesuffix("`"))

    t: mi.Type = mi.type_info(root)
    value: Any = raw
    path: list[str | int] = []
    for part in parts:
        if part is _ANY_KEY:
            item_type = _child(t, part)
            items = value.items() if isinstance(value, dict) else ()
            part = next((k for k, v in items if not _conforms(v, item_type)), None)
            if part is None:
                break
        path.append(part)
        t = _child(t, part)
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            value = None

    unknown = re.fullmatch(r"Object contains unknown field `(.+)`", message)
    if unknown:
        key = unknown.group(1)
        valid = [f.encode_name for f in getattr(_unwrap(t), "fields", ())]
        close = difflib.get_close_matches(key, valid, n=1)
        if close:
            hint = f'did you mean "{close[0]}"?'
        else:
            hint = "valid keys: " + ", ".join(valid)
        return (*path, key), f'unknown key "{key}" ({hint})'
    missing = re.fullmatch(r"Object missing required field `(.+)`", message)
    if missing:
        return tuple(path), f'missing required key "{missing.group(1)}"'
    if message.startswith(("Expected `", "Invalid enum value")):
        return tuple(path), f"expected {describe(t)}, got {render_value(value)}"
    return tuple(path), f"{message}, got {render_value(value)}"
