"""Result encoding with limits applied while the rows arrive (sans-IO).

A `RowsBuilder` takes a query's rows chunk by chunk, as the pool reads them
from the driver, turns each chunk into its msgpack bytes at once (so only
encoded bytes are kept, never the driver's row objects), and raises
`ResultTooLarge` the moment the result crosses ``max_rows`` rows or
``max_bytes`` encoded bytes: the statement is then stopped without reading
the rest. `frame` assembles the final ``rows`` frame around the encoded rows.

`next_chunk` picks the size of the next chunk from the rows seen so far, so
that a chunk stays near `CHUNK_BYTES` whatever the width of a row.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec

from pools import PoolError, ResultTooLarge

from . import codec
from .messages import ResponseId

__all__ = ["CHUNK_BYTES", "RowsBuilder", "UnencodableResult"]

#: target size of one chunk of encoded rows
CHUNK_BYTES = 256 * 1024
MIN_CHUNK_ROWS = 1
MAX_CHUNK_ROWS = 4096


class UnencodableResult(PoolError):
    """A row value has no wire form; the statement is stopped."""


class _RawRows(msgspec.Struct, frozen=True, tag_field="t", tag="rows"):
    """A `Rows` message whose rows are already encoded (same wire form)."""

    id: ResponseId
    columns: list[str]
    rows: msgspec.Raw
    rowcount: int


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


class RowsBuilder:
    """Encoded rows of one result, bounded by ``max_rows`` and ``max_bytes``."""

    __slots__ = ("_encoder", "_parts", "max_bytes", "max_rows", "rid", "rows", "size")

    def __init__(self, rid: int, *, max_rows: int, max_bytes: int) -> None:
        self.rid = rid
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.rows = 0
        self.size = 0  # encoded bytes held
        self._parts: list[bytes] = []
        self._encoder = msgspec.msgpack.Encoder()

    def add(self, rows: list[tuple[Any, ...]]) -> int:
        """Encode a chunk; returns the bytes it added. Raises `ResultTooLarge`
        past a limit and `UnencodableResult` for a value with no wire form."""
        count = self.rows + len(rows)
        if count > self.max_rows:
            self.rows = count
            raise ResultTooLarge(
                f"the result has more than {self.max_rows} rows (max_result_rows)", rows=count
            )
        try:
            data = self._encoder.encode(codec.rows_to_wire(rows))
        except Exception as exc:
            raise UnencodableResult(f"{type(exc).__name__}: {exc}") from exc
        body = data[len(_array_header(len(rows))) :]
        if self.size + len(body) > self.max_bytes:
            raise ResultTooLarge(
                f"the result is larger than {self.max_bytes} bytes (max_result_size)"
                f" after {count} rows",
                rows=count,
                size=self.size + len(body),
            )
        self.rows = count
        self.size += len(body)
        self._parts.append(body)
        return len(body)

    def next_chunk(self) -> int:
        """Rows to ask for next: about `CHUNK_BYTES` at the average row size so far."""
        if not self.rows:
            return MAX_CHUNK_ROWS
        per_row = max(self.size // self.rows, 1)
        return max(MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS, CHUNK_BYTES // per_row))

    def message(self, columns: list[str], rowcount: int) -> _RawRows:
        """The ``rows`` response around the encoded rows (the parts are released)."""
        raw = msgspec.Raw(_array_header(self.rows) + b"".join(self._parts))
        self._parts.clear()
        return _RawRows(self.rid, columns, raw, rowcount)

    def __repr__(self) -> str:
        return f"<RowsBuilder id={self.rid} rows={self.rows} bytes={self.size}>"
