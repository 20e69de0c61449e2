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

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import msgspec

from pools import PoolError, ResultTooLarge

from . import codec
from .messages import ResponseId

__all__ = [
    "CHUNK_BYTES",
    "FIRST_CHUNK_ROWS",
    "SMALL_REPLY",
    "Reply",
    "ReplyBuffer",
    "RowsBuilder",
    "UnencodableResult",
]

#: target size of one chunk of encoded rows
CHUNK_BYTES = 256 * 1024
#: rows asked for in the first chunk, before the row size is known
FIRST_CHUNK_ROWS = 64
MIN_CHUNK_ROWS = 1
MAX_CHUNK_ROWS = 4096
#: a result may grow past this many encoded bytes only while it holds its
#: connection's one large-result turn (so one connection holds at most one
#: large result plus max_in_flight small ones, however many it pipelines)
SMALL_REPLY = 64 * 1024


_ENCODER = msgspec.msgpack.Encoder()  # keeps no state between calls


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
        self._encoder = _ENCODER

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

    @property
    def row_size(self) -> int:
        """Average encoded bytes per row so far (at least 1)."""
        return max(self.size // self.rows, 1) if self.rows else 1

    def next_chunk(self) -> int:
        """Rows to ask for next: about `CHUNK_BYTES` at the average row size so far."""
        if not self.rows:
            return MAX_CHUNK_ROWS
        return max(MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS, CHUNK_BYTES // self.row_size))

    def message(self, columns: list[str], rowcount: int) -> _RawRows:
        """The ``rows`` response around the encoded rows (the parts are released)."""
        raw = msgspec.Raw(_array_header(self.rows) + b"".join(self._parts))
        self._parts.clear()
        return _RawRows(self.rid, columns, raw, rowcount)

    def __repr__(self) -> str:
        return f"<RowsBuilder id={self.rid} rows={self.rows} bytes={self.size}>"


class Reply:
    """A streamed result on its way out, and the bytes its connection holds for it."""

    __slots__ = ("held", "message", "turn")

    def __init__(self) -> None:
        self.message: _RawRows | None = None
        self.held = 0
        self.turn = False  # holds the connection's large-result turn


class ReplyBuffer:
    """The encoded reply bytes one connection holds (results being read, replies
    not yet written) and its large-result turn: results grow past `SMALL_REPLY`
    one at a time, each keeping the turn until its reply has been written."""

    def __init__(self, on_peak: Callable[[int], None] | None = None) -> None:
        self.bytes = 0
        self.peak = 0
        self._on_peak = on_peak
        self._turn_lock: asyncio.Lock | None = None  # made by the first large result

    @property
    def _turn(self) -> asyncio.Lock:
        lock = self._turn_lock
        if lock is None:
            lock = self._turn_lock = asyncio.Lock()
        return lock

    def hold(self, reply: Reply, n: int) -> None:
        reply.held += n
        self.bytes += n
        if self.bytes > self.peak:
            self.peak = self.bytes
            if self._on_peak is not None:
                self._on_peak(self.bytes)

    async def grow(self, reply: Reply, n: int, size: int, coming: int = 0) -> None:
        """Hold ``n`` more bytes of a result now ``size`` bytes long. Before it can
        grow past `SMALL_REPLY` (``coming`` is the size of the next chunk), wait
        for the large-result turn (backpressure): results waiting for the turn
        hold at most `SMALL_REPLY` each (or their first chunk, if larger)."""
        self.hold(reply, n)
        if size + coming > SMALL_REPLY and not reply.turn:
            await self._turn.acquire()
            reply.turn = True

    def release(self, reply: Reply) -> None:
        """The reply was written (or never will be): drop its bytes and its turn."""
        self.bytes -= reply.held
        reply.held = 0
        reply.message = None
        if reply.turn:
            reply.turn = False
            self._turn.release()
