"""Sans-IO MySQL wire protocol pieces for the front door: framing, packets, scanning.

Nothing here does I/O. `PacketReader` cuts a byte stream into packets (with a
size bound), the ``*_packet`` functions build the server's packets, and
`ResponseScanner` follows a database server's response to one command
without decoding its values: fed the bytes as they arrive, it says how many
of them belong to the response, when the response is complete, and the
status flags it ended with (so result sets are forwarded as they are read).

Protocol reference: the MySQL client/server protocol (Protocol::HandshakeV10,
HandshakeResponse41, OK/ERR/EOF packets, text and binary result sets) without
``CLIENT_DEPRECATE_EOF``: the pool's connections do not negotiate it, so the
front door does not offer it and forwards result sets unchanged.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

__all__ = [
    "MAX_PAYLOAD",
    "MalformedPacket",
    "PacketReader",
    "PacketTooLarge",
    "ResponseKind",
    "ResponseScanner",
    "eof_packet",
    "err_packet",
    "frame",
    "lenenc_int",
    "ok_packet",
    "read_lenenc_int",
]

#: a payload of this length continues in the next packet
MAX_PAYLOAD: Final = 0xFFFFFF

# Capability flags (Protocol::CapabilityFlags).
CLIENT_LONG_PASSWORD: Final = 1
CLIENT_FOUND_ROWS: Final = 2
CLIENT_LONG_FLAG: Final = 4
CLIENT_CONNECT_WITH_DB: Final = 8
CLIENT_PROTOCOL_41: Final = 0x200
CLIENT_SSL: Final = 0x800
CLIENT_TRANSACTIONS: Final = 0x2000
CLIENT_SECURE_CONNECTION: Final = 0x8000
CLIENT_MULTI_STATEMENTS: Final = 1 << 16
CLIENT_MULTI_RESULTS: Final = 1 << 17
CLIENT_PS_MULTI_RESULTS: Final = 1 << 18
CLIENT_PLUGIN_AUTH: Final = 1 << 19
CLIENT_CONNECT_ATTRS: Final = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: Final = 1 << 21

#: what the front door offers: the format-affecting flags match the pool's
#: connections (no DEPRECATE_EOF, no session tracking, no compression, no TLS)
SERVER_CAPABILITIES: Final = (
    CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
)

# Server status flags.
SERVER_STATUS_IN_TRANS: Final = 0x0001
SERVER_STATUS_AUTOCOMMIT: Final = 0x0002
SERVER_MORE_RESULTS_EXISTS: Final = 0x0008

_EOF_MAX_LENGTH: Final = 9  # an EOF packet is 0xFE with a payload shorter than this
_MAX_INSPECTED: Final = 1 << 20  # OK, ERR, EOF and header packets are far shorter


class MalformedPacket(ValueError):
    """A packet whose content does not parse."""


class PacketTooLarge(ValueError):
    """A packet (or a packet continued over several) longer than allowed;
    ``seq`` is its sequence number (an answer takes the next one)."""

    def __init__(self, message: str, seq: int) -> None:
        super().__init__(message)
        self.seq = seq


# ---------------------------------------------------------------------------- framing


def frame(seq: int, payload: bytes | bytearray | memoryview) -> bytes:
    """``payload`` as packets starting at sequence number ``seq`` (split at 16 MiB)."""
    n = len(payload)
    if n < MAX_PAYLOAD:
        return struct.pack("<I", n | (seq & 0xFF) << 24) + bytes(payload)
    parts = []
    pos = 0
    while True:
        chunk = payload[pos : pos + MAX_PAYLOAD]
        parts.append(struct.pack("<I", len(chunk) | (seq & 0xFF) << 24) + bytes(chunk))
        seq += 1
        pos += len(chunk)
        if len(chunk) < MAX_PAYLOAD:
            return b"".join(parts)


class PacketReader:
    """Cuts the bytes a client sends into ``(seq, payload)`` packets.

    A payload continued over several packets (16 MiB each) is joined. A
    payload longer than ``max_payload`` raises `PacketTooLarge` as soon as its
    header is read; nothing of it is buffered.
    """

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._parts_len = 0
        self._first_seq = 0

    def __repr__(self) -> str:
        return f"<PacketReader buffered={len(self._buf)} max_payload={self.max_payload}>"

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._parts_len

    def remaining(self) -> int:
        """Bytes still to come of the packet whose header was read (after
        `PacketTooLarge`: what to discard before the client reads an answer)."""
        if len(self._buf) < 4:
            return 0
        return max(0, 4 + int.from_bytes(self._buf[:3], "little") - len(self._buf))

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_packet(self) -> tuple[int, bytes] | None:
        """The next whole packet, or None until more bytes arrive."""
        buf = self._buf
        while len(buf) >= 4:
            header = int.from_bytes(buf[:4], "little")
            length, seq = header & 0xFFFFFF, header >> 24
            if self._parts_len + length > self.max_payload:
                raise PacketTooLarge(
                    f"packet of {self._parts_len + length} bytes or more;"
                    f" max_allowed_packet is {self.max_payload}",
                    seq,
                )
            if len(buf) < 4 + length:
                return None
            body = bytes(buf[4 : 4 + length])
            del buf[: 4 + length]
            if not self._parts:
                self._first_seq = seq
            if length == MAX_PAYLOAD:
                self._parts.append(body)
                self._parts_len += length
                continue
            if self._parts:
                body = b"".join(self._parts) + body
                self._parts.clear()
                self._parts_len = 0
            return self._first_seq, body
        return None


# ---------------------------------------------------------------------- encodings


def lenenc_int(n: int) -> bytes:
    if n < 0xFB:
        return bytes((n,))
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


def read_lenenc_int(data: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it); raises `MalformedPacket` past the end."""
    try:
        first = data[pos]
        if first < 0xFB:
            return first, pos + 1
        size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
        if size is None or pos + 1 + size > len(data):
            raise MalformedPacket(f"bad length-encoded integer at byte {pos}")
        return int.from_bytes(data[pos + 1 : pos + 1 + size], "little"), pos + 1 + size
    except IndexError:
        raise MalformedPacket(f"packet ends at byte {pos}, a length was expected") from None


def read_nul_string(data: bytes, pos: int) -> tuple[bytes, int]:
    end = data.find(b"\0", pos)
    if end < 0:
        raise MalformedPacket(f"unterminated string at byte {pos}")
    return data[pos:end], end + 1


# ------------------------------------------------------------------------ packets


def ok_packet(
    seq: int, status: int, *, affected: int = 0, insert_id: int = 0, warnings: int = 0
) -> bytes:
    body = (
        b"\x00"
        + lenenc_int(affected)
        + lenenc_int(insert_id)
        + struct.pack("<HH", status & 0xFFFF, warnings)
    )
    return frame(seq, body)


def err_packet(seq: int, errno: int, sqlstate: str, message: str) -> bytes:
    state = sqlstate.encode("ascii")[:5].ljust(5, b"0")
    text = message.encode("utf-8", "replace")[:8000]
    return frame(seq, b"\xff" + struct.pack("<H", errno) + b"#" + state + text)


def eof_packet(seq: int, status: int, warnings: int = 0) -> bytes:
    return frame(seq, b"\xfe" + struct.pack("<HH", warnings, status & 0xFFFF))


def parse_err(body: bytes) -> tuple[int, str]:
    """(errno, message) of an ERR packet body."""
    if len(body) < 3:
        return 0, ""
    errno = int.from_bytes(body[1:3], "little")
    rest = body[3:]
    if rest[:1] == b"#":
        rest = rest[6:]
    return errno, rest.decode("utf-8", "replace")


def ok_status(body: bytes) -> int:
    """The status flags of an OK packet body."""
    _, pos = read_lenenc_int(body, 1)
    _, pos = read_lenenc_int(body, pos)
    if pos + 2 > len(body):
        raise MalformedPacket("OK packet without status flags")
    return int.from_bytes(body[pos : pos + 2], "little")


# ----------------------------------------------------------------------- scanning


class ResponseKind(enum.Enum):
    """What a command is answered with."""

    RESULT = "result"  # COM_QUERY, COM_STMT_EXECUTE: OK, ERR, or result set(s)
    PREPARE = "prepare"  # COM_STMT_PREPARE: OK with definitions, or ERR
    SIMPLE = "simple"  # OK or ERR


class _S(enum.Enum):
    FIRST = 1  # the first packet of a response (or of the next result)
    COLUMNS = 2  # column definitions, then an EOF
    ROWS = 3  # rows until an EOF or ERR
    DEFS = 4  # prepare: parameter / column definitions (each group ends with EOF)


# The states as module constants: a global lookup is cheaper than an enum's
# class attribute, and the scanner checks its state for every packet.
_FIRST, _COLUMNS, _ROWS, _DEFS = _S.FIRST, _S.COLUMNS, _S.ROWS, _S.DEFS


class ResponseScanner:
    """Follows one response of a MySQL server without decoding rows.

    ``feed(data)`` returns how many leading bytes of ``data`` belong to the
    response (the rest belongs to the next pipelined response). When `done`,
    ``status`` holds the last status flags seen (None after an ERR, which
    carries none), ``error`` the ERR packet's ``(errno, message)`` if the
    response ended with one, and for a prepare ``prepared`` holds
    ``(statement_id, columns, params)``.
    """

    __slots__ = (
        "_continued",
        "_groups",
        "_hold",
        "_skip",
        "_state",
        "_want",
        "done",
        "error",
        "kind",
        "prepared",
        "result_sets",
        "status",
    )

    def __init__(self, kind: ResponseKind) -> None:
        self.kind = kind
        self.done = False
        self.status: int | None = None
        self.error: tuple[int, str] | None = None
        self.prepared: tuple[int, int, int] | None = None
        self.result_sets = 0
        self._state = _S.FIRST
        self._hold = bytearray()  # the start of the packet being inspected
        self._want = 4  # bytes of the packet needed before it can be judged
        self._skip = 0  # body bytes of the current packet to pass unread
        self._continued = False  # the current packet continues a 16 MiB one
        self._groups = 0  # prepare: definition groups (parameters, columns) left

    def __repr__(self) -> str:
        state = "done" if self.done else self._state.name.lower()
        return f"<ResponseScanner {self.kind.value} {state} status={self.status}>"

    def feed(self, data: bytes | memoryview) -> int:
        pos, n = 0, len(data)
        while pos < n and not self.done:
            if not self._skip and not self._hold and not self._continued and n - pos >= 5:
                # Fast path: a packet whose header and first byte are in ``data``
                # is judged in place (a row or definition is skipped unread;
                # a packet to inspect is acted on when it is whole).
                length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
                if 0 < length < MAX_PAYLOAD:
                    first = data[pos + 4]
                    end = pos + 4 + length
                    if (
                        self._state is _FIRST
                        or first == 0xFF
                        or (first == 0xFE and length < _EOF_MAX_LENGTH)
                    ):
                        if end <= n and length <= _MAX_INSPECTED:
                            self._act(first, length, bytes(data[pos + 4 : end]))
                            pos = end
                            continue
                    elif end <= n:
                        pos = end
                        continue
                    else:
                        self._skip = end - n
                        return n
            if self._skip:
                take = min(self._skip, n - pos)
                pos += take
                self._skip -= take
                continue
            hold = self._hold
            take = min(self._want - len(hold), n - pos)
            hold += data[pos : pos + take]
            pos += take
            if len(hold) < self._want:
                break
            self._judge()
        return pos

    def _judge(self) -> None:
        """Decide on the held start of a packet: ask for more of it, or act on it."""
        hold = self._hold
        length = int.from_bytes(hold[:3], "little")
        if self._continued:  # the rest of a long packet: nothing to judge
            return self._pass(length)
        if length == 0:
            first = -1
        elif len(hold) < 5:
            self._want = 5
            return None
        else:
            first = hold[4]
        needs_whole = (
            self._state is _FIRST or (first == 0xFE and length < _EOF_MAX_LENGTH) or first == 0xFF
        )
        if needs_whole and len(hold) < 4 + length:
            if length > _MAX_INSPECTED:
                raise MalformedPacket(f"a {length}-byte packet where a short one was expected")
            self._want = 4 + length
            return None
        body = bytes(hold[4 : 4 + length]) if needs_whole else b""
        self._act(first, length, body)
        return self._pass(length)

    def _pass(self, length: int) -> None:
        self._continued = length == MAX_PAYLOAD
        self._skip = max(0, length - (len(self._hold) - 4))
        self._hold = bytearray()
        self._want = 4

    def _act(self, first: int, length: int, body: bytes) -> None:
        state = self._state
        if first == 0xFF and state is not _COLUMNS:
            self.error = parse_err(body)
            self.status = None
            self.done = True
            return
        if state is _FIRST:
            if self.kind is ResponseKind.PREPARE:
                return self._prepare_ok(first, body)
            if first == 0x00:
                self.status = ok_status(body)
                self._end_of_result()
                return None
            if self.kind is ResponseKind.SIMPLE or first == 0xFB:
                raise MalformedPacket(f"unexpected response packet 0x{first:02x}")
            read_lenenc_int(body, 0)  # the column count
            self._state = _COLUMNS
            return None
        is_eof = first == 0xFE and length < _EOF_MAX_LENGTH
        if state is _COLUMNS:
            if is_eof:
                self._state = _ROWS
            return None
        if state is _ROWS:
            if is_eof:
                self.status = int.from_bytes(body[3:5], "little") if len(body) >= 5 else 0
                self.result_sets += 1
                self._end_of_result()
            return None
        # _S.DEFS
        if is_eof:
            self._next_group()
        return None

    def _end_of_result(self) -> None:
        if self.status is not None and self.status & SERVER_MORE_RESULTS_EXISTS:
            self._state = _FIRST
        else:
            self.done = True

    def _prepare_ok(self, first: int, body: bytes) -> None:
        if first != 0x00 or len(body) < 9:
            raise MalformedPacket("bad COM_STMT_PREPARE response")
        stmt_id, columns, params = struct.unpack_from("<IHH", body, 1)
        self.prepared = (stmt_id, columns, params)
        groups = [g for g in (params, columns) if g]
        if not groups:
            self.done = True
            return
        self._groups = len(groups)
        self._state = _DEFS

    def _next_group(self) -> None:
        self._groups -= 1
        if self._groups == 0:
            self.done = True
