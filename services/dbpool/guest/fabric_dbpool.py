"""fabric_dbpool: client for the fabric dbpool service, for componentize-py guests.

One module, standard library only (no C extensions exist inside a guest),
speaking protocol version 1 (docs/dbpool-protocol.md) over a blocking
`socket`.  Works on CPython 3.11 and later (componentize-py bundles 3.14).

    import fabric_dbpool

    with fabric_dbpool.connect(port=7432) as conn:
        res = conn.execute("main", "SELECT id, name FROM users WHERE id = $1", (7,))
        for row in res.rows: ...
        with conn.transaction("main"):
            conn.execute("main", "INSERT INTO t VALUES ($1)", (1,))
            conn.executemany("main", "INSERT INTO t VALUES ($1)", [(2,), (3,)])

SQL uses the database's own placeholders ($1 for PostgreSQL, %s for MySQL).
Parameters and results map to Python values as in the protocol's type
table: None, bool, int, float, str, bytes, list, dict natively;
Decimal, date, time, datetime, timedelta and UUID as msgpack ext values.
Errors raise `DbPoolError(code, sqlstate, message)`.

A component built against the world ``sql-command`` imports the typed
``fabric:dbpool/sql`` interface; `connect` then returns a `SqlConnection`,
which reaches the service in-process through that import (no socket, no
encoding) with the same API.  Without the import (world ``command``, or
outside a guest) it speaks the wire protocol (docs/sql-import.md).

A service that asks for a secret (clients from outside the workload) is
answered with ``connect(..., secret="...")``: an HMAC of the service's
challenge is sent, never the secret itself.
"""

from __future__ import annotations

import datetime
import decimal
import json
import socket
import struct
import time
import uuid
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

try:  # present only in components built with the typed import (world sql-command)
    from componentize_py_types import Err as _WitErr
    from wit_world.imports import sql as _sql
except ImportError:
    _sql = None

__all__ = [
    "HAS_SQL_IMPORT",
    "PROTOCOL_VERSION",
    "Connection",
    "DbPoolError",
    "Result",
    "SqlConnection",
    "connect",
    "packb",
    "unpackb",
]

#: True when this component imports ``fabric:dbpool/sql`` and `connect` uses it.
HAS_SQL_IMPORT = _sql is not None

PROTOCOL_VERSION = 1
MAGIC = b"FDBP"
_CLIENT_HELLO = struct.Struct(">4sHH")
_SERVER_HELLO = struct.Struct(">4sHHII")
_HEADER = struct.Struct(">I")
_HANDSHAKE_STATUS = {
    1: "unsupported_version",
    2: "too_many_clients",
    3: "server_closing",
    5: "unsupported_flags",
}
_AUTH_REQUIRED = 4
_AUTH_METHOD = "hmac-sha256"
_AUTH_CONTEXT = b"fabric-dbpool-auth:"
#: largest response frame this client will buffer
MAX_RESPONSE_SIZE = 1 << 30


class DbPoolError(Exception):
    """An error reported by the service, or a failure talking to it.

    ``code`` is the protocol's error code ("database_error",
    "acquire_timeout", "disconnected", ...); ``sqlstate`` is the database's
    SQLSTATE when the database raised the error, else None; ``db_code`` is
    the database's own code for database errors (MySQL error number, or
    "client" when the driver refused the parameters).
    """

    def __init__(
        self, code: str, sqlstate: str | None, message: str, db_code: str | None = None
    ) -> None:
        super().__init__(f"{code}{f' [{sqlstate}]' if sqlstate else ''}: {message}")
        self.code = code
        self.sqlstate = sqlstate
        self.message = message
        self.db_code = db_code


class Result:
    """Rows of one statement: ``columns``, ``rows`` (tuples), ``rowcount``."""

    __slots__ = ("columns", "rowcount", "rows")

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self.columns = columns
        self.rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Any:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def scalar(self) -> Any:
        """The first column of the first row (None when there are no rows)."""
        return self.rows[0][0] if self.rows else None

    def __repr__(self) -> str:
        return f"<Result columns={self.columns!r} rows={len(self.rows)} rowcount={self.rowcount}>"


# ---------------------------------------------------------------------------- msgpack
# Exactly the subset the protocol uses.  Ext codes as in the type table.

EXT_DECIMAL, EXT_DATE, EXT_TIME, EXT_DATETIME, EXT_TIMEDELTA, EXT_UUID = 1, 2, 3, 4, 5, 6
_TIMEDELTA = struct.Struct(">iii")
_B = struct.Struct(">B")
_H = struct.Struct(">H")
_I = struct.Struct(">I")
_Q = struct.Struct(">Q")
_b = struct.Struct(">b")
_h = struct.Struct(">h")
_i = struct.Struct(">i")
_q = struct.Struct(">q")
_f = struct.Struct(">f")
_d = struct.Struct(">d")
_FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def _pack_len(
    out: bytearray, n: int, fix_base: int, fix_max: int, c8: int | None, c16: int, c32: int
) -> None:
    if n <= fix_max:
        out.append(fix_base | n)
    elif c8 is not None and n < 0x100:
        out.append(c8)
        out.append(n)
    elif n < 0x10000:
        out.append(c16)
        out += _H.pack(n)
    elif n < 0x100000000:
        out.append(c32)
        out += _I.pack(n)
    else:
        raise ValueError(f"msgpack: object too large ({n})")


def _pack_ext(out: bytearray, code: int, data: bytes) -> None:
    n = len(data)
    fix = _FIXEXT.get(n)
    if fix is not None:
        out.append(fix)
    elif n < 0x100:
        out.append(0xC7)
        out.append(n)
    elif n < 0x10000:
        out.append(0xC8)
        out += _H.pack(n)
    else:
        out.append(0xC9)
        out += _I.pack(n)
    out += _b.pack(code)
    out += data


def _pack_int(out: bytearray, v: int) -> None:
    if 0 <= v < 0x80:
        out.append(v)
    elif -32 <= v < 0:
        out.append(v & 0xFF)
    elif 0 <= v <= 0xFFFFFFFFFFFFFFFF:
        if v < 0x100:
            out.append(0xCC)
            out.append(v)
        elif v < 0x10000:
            out.append(0xCD)
            out += _H.pack(v)
        elif v < 0x100000000:
            out.append(0xCE)
            out += _I.pack(v)
        else:
            out.append(0xCF)
            out += _Q.pack(v)
    elif -(1 << 63) <= v < 0:
        if v >= -0x80:
            out.append(0xD0)
            out += _b.pack(v)
        elif v >= -0x8000:
            out.append(0xD1)
            out += _h.pack(v)
        elif v >= -0x80000000:
            out.append(0xD2)
            out += _i.pack(v)
        else:
            out.append(0xD3)
            out += _q.pack(v)
    else:  # outside msgpack's int range: travels as a Decimal
        _pack_ext(out, EXT_DECIMAL, str(v).encode("ascii"))


def _pack(out: bytearray, obj: Any) -> None:
    t = type(obj)
    if obj is None:
        out.append(0xC0)
    elif t is bool:
        out.append(0xC3 if obj else 0xC2)
    elif t is int:
        _pack_int(out, obj)
    elif t is float:
        out.append(0xCB)
        out += _d.pack(obj)
    elif t is str:
        data = obj.encode("utf-8")
        _pack_len(out, len(data), 0xA0, 31, 0xD9, 0xDA, 0xDB)
        out += data
    elif t is bytes or t is bytearray or t is memoryview:
        data = bytes(obj)
        n = len(data)
        _pack_len(out, n, 0, -1, 0xC4, 0xC5, 0xC6)
        out += data
    elif t is list or t is tuple:
        _pack_len(out, len(obj), 0x90, 15, None, 0xDC, 0xDD)
        for item in obj:
            _pack(out, item)
    elif t is dict:
        _pack_len(out, len(obj), 0x80, 15, None, 0xDE, 0xDF)
        for key, value in obj.items():
            _pack(out, key)
            _pack(out, value)
    elif isinstance(obj, decimal.Decimal):
        _pack_ext(out, EXT_DECIMAL, str(obj).encode("ascii"))
    elif isinstance(obj, datetime.datetime):  # before date: datetime is a date
        _pack_ext(out, EXT_DATETIME, obj.isoformat().encode("ascii"))
    elif isinstance(obj, datetime.date):
        _pack_ext(out, EXT_DATE, obj.isoformat().encode("ascii"))
    elif isinstance(obj, datetime.time):
        _pack_ext(out, EXT_TIME, obj.isoformat().encode("ascii"))
    elif isinstance(obj, datetime.timedelta):
        _pack_ext(out, EXT_TIMEDELTA, _TIMEDELTA.pack(obj.days, obj.seconds, obj.microseconds))
    elif isinstance(obj, uuid.UUID):
        _pack_ext(out, EXT_UUID, obj.bytes)
    elif isinstance(obj, bool):
        out.append(0xC3 if obj else 0xC2)
    elif isinstance(obj, int):
        _pack_int(out, int(obj))
    elif isinstance(obj, float):
        _pack(out, float(obj))
    elif isinstance(obj, str):
        _pack(out, str(obj))
    elif isinstance(obj, (list, tuple, set, frozenset)):
        _pack(out, list(obj))
    elif isinstance(obj, dict):
        _pack(out, dict(obj))
    else:
        raise TypeError(f"fabric_dbpool cannot send values of type {t.__name__}")


def packb(obj: Any) -> bytes:
    """Encode ``obj`` as msgpack (the protocol's subset and ext types)."""
    out = bytearray()
    _pack(out, obj)
    return bytes(out)


def _unext(code: int, data: bytes) -> Any:
    if code == EXT_DECIMAL:
        return decimal.Decimal(data.decode("ascii"))
    if code == EXT_DATE:
        return datetime.date.fromisoformat(data.decode("ascii"))
    if code == EXT_TIME:
        return datetime.time.fromisoformat(data.decode("ascii"))
    if code == EXT_DATETIME:
        return datetime.datetime.fromisoformat(data.decode("ascii"))
    if code == EXT_TIMEDELTA:
        days, seconds, micros = _TIMEDELTA.unpack(data)
        return datetime.timedelta(days=days, seconds=seconds, microseconds=micros)
    if code == EXT_UUID:
        return uuid.UUID(bytes=data)
    raise ValueError(f"unknown ext code {code}")


class _Unpacker:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        start = self.pos
        end = start + n
        if end > len(self.data):
            raise ValueError("msgpack: truncated data")
        self.pos = end
        return self.data[start:end]

    def _num(self, st: struct.Struct) -> Any:
        start = self.pos
        self.pos = start + st.size
        if self.pos > len(self.data):
            raise ValueError("msgpack: truncated data")
        return st.unpack_from(self.data, start)[0]

    def _array(self, n: int) -> list[Any]:
        return [self.read() for _ in range(n)]

    def _map(self, n: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for _ in range(n):
            key = self.read()
            out[key] = self.read()
        return out

    def read(self) -> Any:
        b = self._num(_B)
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0xA0 <= b <= 0xBF:
            return self._take(b & 0x1F).decode("utf-8")
        if 0x90 <= b <= 0x9F:
            return self._array(b & 0x0F)
        if 0x80 <= b <= 0x8F:
            return self._map(b & 0x0F)
        if b == 0xC0:
            return None
        if b == 0xC2:
            return False
        if b == 0xC3:
            return True
        if b == 0xCB:
            return self._num(_d)
        if b == 0xCA:
            return self._num(_f)
        if 0xCC <= b <= 0xCF:
            return self._num((_B, _H, _I, _Q)[b - 0xCC])
        if 0xD0 <= b <= 0xD3:
            return self._num((_b, _h, _i, _q)[b - 0xD0])
        if 0xD9 <= b <= 0xDB:
            return self._take(self._num((_B, _H, _I)[b - 0xD9])).decode("utf-8")
        if 0xC4 <= b <= 0xC6:
            return bytes(self._take(self._num((_B, _H, _I)[b - 0xC4])))
        if b == 0xDC or b == 0xDD:
            return self._array(self._num(_H if b == 0xDC else _I))
        if b == 0xDE or b == 0xDF:
            return self._map(self._num(_H if b == 0xDE else _I))
        if 0xD4 <= b <= 0xD8:
            n = 1 << (b - 0xD4)
        elif 0xC7 <= b <= 0xC9:
            n = self._num((_B, _H, _I)[b - 0xC7])
        else:
            raise ValueError(f"msgpack: unused type byte 0x{b:02x}")
        code = self._num(_b)
        return _unext(code, bytes(self._take(n)))


def unpackb(data: bytes) -> Any:
    """Decode one msgpack value that fills ``data`` exactly."""
    u = _Unpacker(bytes(data))
    value = u.read()
    if u.pos != len(u.data):
        raise ValueError(f"msgpack: {len(u.data) - u.pos} bytes of trailing data")
    return value


# ------------------------------------------------------------------------- connection


class Connection:
    """One connection to the service.  Not thread-safe; one request at a time.

    A transaction (``begin``/``transaction``) belongs to this connection: it
    pins one database connection until ``commit``/``rollback``, and is rolled
    back by the service if this connection closes first.
    """

    def __init__(
        self,
        sock: socket.socket,
        server_version: int,
        max_frame_size: int,
        max_in_flight: int,
        timeout: float | None,
    ) -> None:
        self._sock = sock
        self._next_id = 1
        self._timeout = timeout
        self.server_version = server_version
        self.max_frame_size = max_frame_size
        self.max_in_flight = max_in_flight
        self.in_transaction: str | None = None  # the database while a transaction is open
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        txn = f" transaction={self.in_transaction!r}" if self.in_transaction else ""
        return f"<fabric_dbpool.Connection {state} requests={self._next_id - 1}{txn}>"

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- public API

    def execute(self, db: str, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement; returns a `Result` (empty ``columns`` for DML)."""
        result: Result = self._call({"t": "query", "db": db, "sql": sql, "params": list(params)})
        return result

    def executemany(self, db: str, sql: str, params_seq: Iterable[Sequence[Any]]) -> int:
        """Run one statement once per parameter sequence; returns the rowcount."""
        seq = [list(p) for p in params_seq]
        count: int = self._call({"t": "execute_many", "db": db, "sql": sql, "params_seq": seq})
        return count

    def begin(self, db: str) -> None:
        """Open a transaction on ``db``, pinned to this connection."""
        try:
            self._call({"t": "begin", "db": db})
        except DbPoolError as exc:
            if exc.code != "already_in_transaction" and not self.closed:
                # A failed begin still opens the scope on the server; close it.
                try:
                    self._call({"t": "rollback"})
                except DbPoolError:
                    pass
            raise
        self.in_transaction = db

    def commit(self) -> None:
        """Commit; the transaction is over even when this raises (then it rolled back)."""
        try:
            self._call({"t": "commit"})
        finally:
            self.in_transaction = None

    def rollback(self) -> None:
        try:
            self._call({"t": "rollback"})
        finally:
            self.in_transaction = None

    def transaction(self, db: str) -> _Transaction:
        """``with conn.transaction(db):`` begins, commits, or rolls back on exception."""
        return _Transaction(self, db)

    def ping(self) -> float:
        """Round trip to the service; returns the seconds it took."""
        start = time.monotonic()
        self._call({"t": "ping"})
        return time.monotonic() - start

    def stats(self) -> dict[str, Any]:
        """The service's statistics as a dict (see ServerStats in the protocol)."""
        stats: dict[str, Any] = self._call({"t": "stats"})
        return stats

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.in_transaction = None
            try:
                self._sock.close()
            except OSError:
                pass

    # -- plumbing

    def _broken(self, code: str, message: str) -> DbPoolError:
        self.close()
        return DbPoolError(code, None, message)

    def _read_frame(self) -> dict[str, Any]:
        """One frame from the service, decoded (a map with a ``"t"`` key)."""
        try:
            header = _recv_exact(self._sock, 4)
            (size,) = _HEADER.unpack(header)
            if size > MAX_RESPONSE_SIZE:
                raise self._broken("protocol_error", f"response frame of {size} bytes")
            body = _recv_exact(self._sock, size)
        except TimeoutError:
            raise self._broken("timeout", f"no response within {self._timeout} s") from None
        except OSError as exc:
            raise self._broken("disconnected", str(exc)) from None
        try:
            msg = unpackb(body)
            msg["t"]
        except Exception as exc:
            raise self._broken("protocol_error", f"malformed response: {exc}") from None
        if not isinstance(msg, dict):
            raise self._broken("protocol_error", "malformed response: not a map")
        return msg

    def _call(self, request: dict[str, Any]) -> Any:
        if self.closed:
            raise DbPoolError("disconnected", None, "connection is closed")
        rid = self._next_id
        self._next_id += 1
        request["id"] = rid
        body = packb(request)
        if len(body) > self.max_frame_size:
            raise DbPoolError(
                "frame_too_large",
                None,
                f"request of {len(body)} bytes exceeds the server's limit of {self.max_frame_size}",
            )
        try:
            self._sock.sendall(_HEADER.pack(len(body)) + body)
        except TimeoutError:
            raise self._broken("timeout", f"no response within {self._timeout} s") from None
        except OSError as exc:
            raise self._broken("disconnected", str(exc)) from None
        msg = self._read_frame()
        tag = msg["t"]
        if tag == "error":
            err = DbPoolError(
                msg.get("code"), msg.get("sqlstate"), msg.get("message"), msg.get("db_code")
            )
            if msg.get("id") == 0:
                self.close()  # connection-level: the server closes
            raise err
        if msg.get("id") != rid:
            got = msg.get("id")
            raise self._broken("protocol_error", f"response id {got!r} for request {rid}")
        if tag == "rows":
            rows = [tuple(r) for r in msg["rows"]]
            return Result(msg["columns"], rows, msg["rowcount"])
        if tag == "done":
            return msg["rowcount"]
        if tag == "pong":
            return None
        if tag == "stats_reply":
            return msg["stats"]
        raise self._broken("protocol_error", f"unexpected response {tag!r}")


class _Transaction:
    __slots__ = ("_conn", "_db")

    def __init__(self, conn: Connection | SqlConnection, db: str) -> None:
        self._conn = conn
        self._db = db

    def __enter__(self) -> Connection | SqlConnection:
        self._conn.begin(self._db)
        return self._conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._conn.commit()
            return
        try:
            self._conn.rollback()
        except DbPoolError:
            pass  # the original exception matters more; the service rolls back on close


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionResetError("connection closed by the service")
        buf += chunk
    return bytes(buf)


def _open_socket(host: str, port: int, timeout: float | None) -> socket.socket:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        # A literal address: connect without a name lookup (cheaper in a guest).
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((host, port), timeout=timeout)
    return sock


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def connect(
    port: int,
    host: str = "127.0.0.1",
    timeout: float | None = None,
    secret: str | bytes | None = None,
) -> Connection | SqlConnection:
    """Connect and handshake; ``timeout`` (seconds) bounds the connect and each
    later request's wait for its response.  The default, None, sets no socket
    timeout: the component's own deadline bounds the invocation, and a socket
    without a timeout waits on it alone (one host call per read, not a poll
    over the socket and a clock).  ``secret`` answers the service's challenge
    when it asks for one (clients from outside the workload).

    With the typed import and a loopback ``host`` the result is a
    `SqlConnection` to the workload's service on ``port`` (``timeout`` and
    ``secret`` do not apply: the invocation's deadline does, and the import
    only reaches the component's own workload); otherwise a socket `Connection`.
    """
    if _sql is not None and host in _LOOPBACK:
        return SqlConnection.open(port)
    try:
        sock = _open_socket(host, port, timeout)
    except TimeoutError:
        raise DbPoolError("timeout", None, f"connect to {host}:{port} timed out") from None
    except OSError as exc:
        msg = f"connect to {host}:{port}: {exc}"
        raise DbPoolError("disconnected", None, msg) from None
    try:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not every socket layer has Nagle to turn off
        sock.sendall(_CLIENT_HELLO.pack(MAGIC, PROTOCOL_VERSION, 0))
        reply = _recv_exact(sock, _SERVER_HELLO.size)
    except TimeoutError:
        sock.close()
        raise DbPoolError("timeout", None, "handshake timed out") from None
    except OSError as exc:
        sock.close()
        raise DbPoolError("disconnected", None, f"handshake: {exc}") from None
    magic, version, status, max_frame, max_in_flight = _SERVER_HELLO.unpack(reply)
    if magic != MAGIC:
        sock.close()
        raise DbPoolError("bad_magic", None, f"not a dbpool service: {magic!r}")
    if status not in (0, _AUTH_REQUIRED):
        sock.close()
        code = _HANDSHAKE_STATUS.get(status, f"status_{status}")
        raise DbPoolError(code, None, f"service refused the handshake (server v{version})")
    conn = Connection(sock, version, max_frame, max_in_flight, timeout)
    if status == _AUTH_REQUIRED:
        _authenticate(conn, secret)
    return conn


def _authenticate(conn: Connection, secret: str | bytes | None) -> None:
    """Answer the challenge that follows an ``auth_required`` server hello."""
    if secret is None:
        conn.close()
        raise DbPoolError("auth_required", None, "the service requires a secret")
    import hashlib  # only clients that authenticate pay for these imports
    import hmac

    key = (secret.encode() if isinstance(secret, str) else secret).strip()
    challenge = conn._read_frame()
    if challenge.get("t") != "challenge" or not isinstance(challenge.get("nonce"), bytes):
        raise conn._broken("protocol_error", "expected the service's challenge")
    digest = hmac.new(key, _AUTH_CONTEXT + challenge["nonce"], hashlib.sha256).digest()
    conn._call({"t": "auth", "method": _AUTH_METHOD, "proof": digest})


# --------------------------------------------------------------- the typed import


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (set, frozenset)):
        return list(value)
    return str(value)


def _to_value(v: Any) -> Any:
    """A Python parameter as a case of the import's ``value`` variant."""
    sql = _sql
    assert sql is not None
    t = type(v)
    if v is None:
        return sql.Value_Null()
    if t is bool:
        return sql.Value_Boolean(v)
    if t is int:
        if -(1 << 63) <= v < (1 << 63):
            return sql.Value_Int64(v)
        return sql.Value_Decimal(str(v))
    if t is str:
        return sql.Value_Text(v)
    if t is float:
        return sql.Value_Float64(v)
    if t is bytes or t is bytearray or t is memoryview:
        return sql.Value_Bytes(bytes(v))
    if isinstance(v, decimal.Decimal):
        return sql.Value_Decimal(str(v))
    if isinstance(v, datetime.datetime):  # before date: datetime is a date
        return sql.Value_Timestamp(v.isoformat())
    if isinstance(v, datetime.date):
        return sql.Value_Date(v.isoformat())
    if isinstance(v, datetime.time):
        return sql.Value_Time(v.isoformat())
    if isinstance(v, datetime.timedelta):
        return sql.Value_Interval(sql.Interval(v.days, v.seconds, v.microseconds))
    if isinstance(v, uuid.UUID):
        return sql.Value_Uuid(str(v))
    if isinstance(v, bool):
        return sql.Value_Boolean(bool(v))
    if isinstance(v, int):
        return _to_value(int(v))
    if isinstance(v, float):
        return sql.Value_Float64(float(v))
    if isinstance(v, str):
        return sql.Value_Text(str(v))
    if isinstance(v, (list, tuple, set, frozenset, dict)):
        data = v if isinstance(v, dict) else list(v)
        text = json.dumps(data, default=_json_default, separators=(",", ":"))
        return sql.Value_Json(text)
    raise TypeError(f"fabric_dbpool cannot send values of type {t.__name__}")


def _from_interval(i: Any) -> datetime.timedelta:
    return datetime.timedelta(days=i.days, seconds=i.seconds, microseconds=i.microseconds)


_FROM_VALUE: dict[str, Any] = {
    "Value_Null": lambda v: None,
    "Value_Boolean": lambda v: v.value,
    "Value_Int64": lambda v: v.value,
    "Value_Float64": lambda v: v.value,
    "Value_Text": lambda v: v.value,
    "Value_Bytes": lambda v: bytes(v.value),
    "Value_Decimal": lambda v: decimal.Decimal(v.value),
    "Value_Date": lambda v: datetime.date.fromisoformat(v.value),
    "Value_Time": lambda v: datetime.time.fromisoformat(v.value),
    "Value_Timestamp": lambda v: datetime.datetime.fromisoformat(v.value),
    "Value_Interval": lambda v: _from_interval(v.value),
    "Value_Uuid": lambda v: uuid.UUID(v.value),
    "Value_Json": lambda v: json.loads(v.value),
}
#: value class -> converter, filled on first use (the classes live in the bindings)
_FROM_CLASS: dict[type, Any] = {}


def _from_value(v: Any) -> Any:
    conv = _FROM_CLASS.get(type(v))
    if conv is None:
        conv = _FROM_CLASS[type(v)] = _FROM_VALUE[type(v).__name__]
    return conv(v)


def _error(err: Any) -> DbPoolError:
    e = err.value
    return DbPoolError(e.code, e.sqlstate, e.message, e.db_code)


class SqlConnection:
    """A session with the service through the typed import; the API of `Connection`.

    A transaction belongs to this object, as to a socket connection: it pins
    one database connection until ``commit``/``rollback`` and is rolled back
    when this closes, or when the invocation ends in any way.
    """

    server_version = PROTOCOL_VERSION

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.in_transaction: str | None = None
        self.closed = False
        self.requests = 0

    @classmethod
    def open(cls, port: int) -> SqlConnection:
        assert _sql is not None
        try:
            return cls(_sql.Connection.open(port))
        except _WitErr as err:
            raise _error(err) from None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        txn = f" transaction={self.in_transaction!r}" if self.in_transaction else ""
        return f"<fabric_dbpool.SqlConnection {state} requests={self.requests}{txn}>"

    def __enter__(self) -> SqlConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _live(self) -> Any:
        if self.closed:
            raise DbPoolError("disconnected", None, "connection is closed")
        self.requests += 1
        return self._handle

    def execute(self, db: str, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement; returns a `Result` (empty ``columns`` for DML)."""
        handle = self._live()
        values = [_to_value(p) for p in params]
        try:
            res = handle.query(db, sql, values)
        except _WitErr as err:
            raise _error(err) from None
        conv = _from_value
        rows = [tuple([conv(v) for v in row]) for row in res.rows]
        return Result(res.columns, rows, res.rowcount)

    def executemany(self, db: str, sql: str, params_seq: Iterable[Sequence[Any]]) -> int:
        """Run one statement once per parameter sequence; returns the rowcount."""
        handle = self._live()
        seq = [[_to_value(p) for p in params] for params in params_seq]
        try:
            count: int = handle.execute_many(db, sql, seq)
        except _WitErr as err:
            raise _error(err) from None
        return count

    def begin(self, db: str) -> None:
        """Open a transaction on ``db``, pinned to this connection."""
        handle = self._live()
        try:
            handle.begin(db)
        except _WitErr as err:
            exc = _error(err)
            if exc.code != "already_in_transaction":
                # A failed begin still opens the scope on the service; close it.
                try:
                    handle.rollback()
                except _WitErr:
                    pass
            raise exc from None
        self.in_transaction = db

    def commit(self) -> None:
        """Commit; the transaction is over even when this raises (then it rolled back)."""
        handle = self._live()
        try:
            handle.commit()
        except _WitErr as err:
            raise _error(err) from None
        finally:
            self.in_transaction = None

    def rollback(self) -> None:
        handle = self._live()
        try:
            handle.rollback()
        except _WitErr as err:
            raise _error(err) from None
        finally:
            self.in_transaction = None

    def transaction(self, db: str) -> _Transaction:
        """``with conn.transaction(db):`` begins, commits, or rolls back on exception."""
        return _Transaction(self, db)

    def ping(self) -> float:
        """Check the session is open; returns the seconds it took (no round trip)."""
        start = time.monotonic()
        self._live()
        return time.monotonic() - start

    def stats(self) -> dict[str, Any]:
        """The service's statistics as a dict (see ServerStats in the protocol)."""
        handle = self._live()
        try:
            stats: dict[str, Any] = json.loads(handle.stats())
        except _WitErr as err:
            raise _error(err) from None
        return stats

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.in_transaction = None
            handle, self._handle = self._handle, None
            handle.__exit__(None, None, None)  # drops the handle: rolls back on the service
