"""Durations and sizes as written in manifests.

A duration is a number of seconds (``5``, ``0.25``) or a string of one or more
``<number><unit>`` parts with units ``us``, ``ms``, ``s``, ``m``, ``h``, ``d``
(``"250ms"``, ``"5s"``, ``"2m"``, ``"1h30m"``).  A size is a number of bytes
(``1048576``) or ``<number><unit>`` with binary units ``KiB``, ``MiB``, ``GiB``,
``TiB`` (also ``Ki``, ``Mi``...) or decimal units ``B``, ``kB``, ``MB``, ``GB``,
``TB`` (case-insensitive).  Both are non-negative and finite.

``Duration`` (a ``float`` of seconds) and ``ByteSize`` (an ``int`` of bytes) are
the types used in the manifest structs; msgspec hands them to :func:`dec_hook`.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = [
    "ByteSize",
    "Duration",
    "dec_hook",
    "enc_hook",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
]

DURATION_HINT = 'a duration like "30s"'
SIZE_HINT = 'a size like "64MiB"'

_DURATION_UNITS = {
    "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
}  # fmt: skip
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|µs|ms|s|m|h|d)")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6,
    "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20,
    "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40,
}  # fmt: skip
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")


class Duration(float):
    """Seconds, decoded from a number or a string such as ``"250ms"``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Duration({format_duration(self)!r})"


class ByteSize(int):
    """Bytes, decoded from a number or a string such as ``"64MiB"``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"ByteSize({format_size(self)!r})"


def parse_duration(value: object) -> Duration:
    """Parse a duration; raise ``ValueError`` with a readable message otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        pos, seconds = 0, 0.0
        while pos < len(text):
            match = _DURATION_PART.match(text, pos)
            if match is None:
                raise ValueError(f"expected {DURATION_HINT}")
            seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            pos = match.end()
        if not text:
            raise ValueError(f"expected {DURATION_HINT}")
    else:
        raise ValueError(f"expected {DURATION_HINT}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("expected a finite, non-negative duration")
    return Duration(seconds)


def parse_size(value: object) -> ByteSize:
    """Parse a size; raise ``ValueError`` with a readable message otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HINT}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise ValueError("expected a whole number of bytes")
        size = int(value)
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match is None or match.group(2).lower() not in _SIZE_UNITS:
            raise ValueError(f"expected {SIZE_HINT}")
        size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    else:
        raise ValueError(f"expected {SIZE_HINT}")
    if size < 0:
        raise ValueError("expected a non-negative size")
    return ByteSize(size)


def format_duration(seconds: float) -> str:
    """The shortest exact-ish spelling: ``0.25`` → ``"250ms"``, ``90`` → ``"1m30s"``."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        if ms >= 1 and abs(ms - round(ms)) < 1e-9:
            return f"{round(ms)}ms"
        return f"{seconds * 1e6:g}us" if ms < 1 else f"{ms:g}ms"
    if not float(seconds).is_integer():
        return f"{seconds:g}s"
    whole, out = int(seconds), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            out += f"{whole // size}{unit}"
            whole %= size
    return out


def format_size(size: int) -> str:
    """``134217728`` → ``"128MiB"``; sizes that are not whole binary units stay in bytes."""
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def dec_hook(type_: type, value: Any) -> Any:
    """msgspec decode hook for :class:`Duration` and :class:`ByteSize`."""
    if type_ is Duration:
        return parse_duration(value)
    if type_ is ByteSize:
        return parse_size(value)
    raise NotImplementedError(f"no decoder for {type_!r}")


def enc_hook(value: Any) -> Any:
    """msgspec encode hook: durations become ``"250ms"``-style strings, sizes ``"64MiB"``."""
    if isinstance(value, Duration):
        text = format_duration(value)
        return text if parse_duration(text) == value else float(value)
    if isinstance(value, ByteSize):
        return format_size(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")
