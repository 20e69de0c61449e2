"""PostgreSQL driver that speaks the wire protocol itself: raw server connections.

asyncpg hides the wire: a relay that forwards a client's Parse/Bind/Execute and the
server's DataRows would have to decode and re-encode every value. ``PgWirePool`` keeps
connections that the protocol front door (``services.dbpool.pgdoor``) writes client
bytes to and reads server bytes from unchanged. The pool does the rest itself: startup,
authentication as a client (trust, cleartext, md5, SCRAM-SHA-256), ReadyForQuery
tracking, ping, and the reset when a lease is given back (a ROLLBACK inside a
transaction; the session reset only after the session changed, see `PgConnection.dirty`).

``Lease.query`` and friends work too (simple and unnamed extended protocol, values
as text), for health checks and tools; they are not the fast path.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import struct
from collections.abc import Sequence
from typing import Any, ClassVar

from ._config import DatabaseConfig, QueryResult, RowSink, StreamResult, tag_count
from ._errors import ConnectionLost, DatabaseError, PoolError
from ._lease import Lease
from ._pool import Pool
from ._state import Slot

__all__ = ["PgConnection", "PgServerError", "PgWireLease", "PgWirePool", "send_cancel"]

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_HEADER = struct.Struct("!ci")
_PROTOCOL_3_0 = 196608
_CANCEL_CODE = 80877102
_MAX_SERVER_MESSAGE = 1 << 30  # the server's own limit

#: What a session may have changed that the next client must not see; sent as one
#: simple-protocol round trip. Prepared statements stay (the front door tracks them).
RESET_SQL = (
    "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; UNLISTEN *; "
    "SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES"
)
_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


class PgServerError(Exception):
    """An ErrorResponse from the server: ``sqlstate``, ``message`` and every field."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        self.sqlstate = fields.get("C", "XX000")
        self.message = fields.get("M", "unknown error")
        super().__init__(f"[{self.sqlstate}] {self.message}")


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + _I32.pack(len(body) + 4) + body


def error_fields(body: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in bytes(body).split(b"\x00"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def _hmac256(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


class PgConnection:
    """One server session. The owner of a lease may read and write ``reader`` /
    ``writer`` directly; it must then keep ``status``, ``dirty`` and ``prepared`` true."""

    #: prepared statements a session keeps; past this the reset deallocates them all
    #: (whoever prepares on the session marks it ``dirty`` when it crosses the limit)
    PREPARED_LIMIT = 5000

    __slots__ = (
        "_buf",
        "dirty",
        "host",
        "key",
        "params",
        "pid",
        "port",
        "prepared",
        "reader",
        "status",
        "writer",
    )

    @classmethod
    async def open(cls, cfg: DatabaseConfig) -> PgConnection:
        """Connect to ``cfg``'s server and log in, within ``cfg.connect_timeout``."""
        async with asyncio.timeout(cfg.connect_timeout):
            reader, writer = await asyncio.open_connection(cfg.host, cfg.resolved_port)
            conn = cls(reader, writer, cfg.host, cfg.resolved_port)
            try:
                await conn.startup(cfg)
            except BaseException:
                conn.terminate()
                raise
        return conn

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host
        self.port = port
        self.pid = 0
        self.key = b""
        self.params: dict[str, str] = {}
        #: transaction status from the last ReadyForQuery: I (idle), T (in), E (failed)
        self.status = b"I"
        #: session state changed (SET, LISTEN, temp tables...): reset before reuse
        self.dirty = False
        #: server-side prepared statement names that exist on this session
        self.prepared: set[bytes] = set()
        self._buf = bytearray()

    def __repr__(self) -> str:
        return (
            f"<PgConnection pid={self.pid} status={self.status.decode()} "
            f"prepared={len(self.prepared)}{' dirty' if self.dirty else ''}>"
        )

    def is_closed(self) -> bool:
        return self.writer.is_closing()

    def terminate(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        if not self.writer.is_closing():
            try:
                self.writer.write(message(b"X"))
            except OSError:
                pass
            self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass

    async def read_message(self) -> tuple[bytes, bytes]:
        buf = self._buf
        while True:
            if len(buf) >= 5:
                kind, size = _HEADER.unpack_from(buf, 0)
                if size < 4 or size > _MAX_SERVER_MESSAGE:
                    raise ConnectionLost(f"bad message length {size} from PostgreSQL")
                if len(buf) > size:
                    body = bytes(buf[5 : size + 1])
                    del buf[: size + 1]
                    return kind, body
            chunk = await self.reader.read(65536)
            if not chunk:
                raise ConnectionLost("PostgreSQL closed the connection")
            buf += chunk

    def _note(self, kind: bytes, body: bytes) -> None:
        if kind == b"S":
            name, value, _ = body.split(b"\x00", 2)
            self.params[name.decode()] = value.decode()

    async def startup(self, cfg: DatabaseConfig) -> None:
        params = {"user": cfg.user or "postgres", "database": cfg.database}
        if cfg.application_name:
            params["application_name"] = cfg.application_name
        body = _I32.pack(_PROTOCOL_3_0)
        body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items())
        body += b"\0"
        self.writer.write(_I32.pack(len(body) + 4) + body)
        scram: _ScramClient | None = None
        while True:
            kind, body = await self.read_message()
            if kind == b"R":
                scram = self._authenticate(body, params["user"], cfg.password, scram)
            elif kind == b"K":
                self.pid = _I32.unpack_from(body, 0)[0]
                self.key = body[4:]
            elif kind == b"Z":
                self.status = body[:1]
                return
            elif kind == b"E":
                raise PgServerError(error_fields(body))
            else:
                self._note(kind, body)

    def _authenticate(
        self, body: bytes, user: str, password: str | None, scram: _ScramClient | None
    ) -> _ScramClient | None:
        (code,) = _I32.unpack_from(body, 0)
        if code == 0:
            return scram
        if password is None:
            raise ConnectFailedAuth("the server asks for a password and the config has none")
        if code == 3:
            self.writer.write(message(b"p", password.encode() + b"\0"))
        elif code == 5:
            inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
            outer = hashlib.md5(inner.encode("ascii") + body[4:8]).hexdigest()
            self.writer.write(message(b"p", ("md5" + outer).encode() + b"\0"))
        elif code == 10:
            if b"SCRAM-SHA-256\0" not in body[4:]:
                raise ConnectFailedAuth("the server offers no SASL mechanism we support")
            scram = _ScramClient(password)
            first = scram.first()
            self.writer.write(message(b"p", b"SCRAM-SHA-256\0" + _I32.pack(len(first)) + first))
        elif code == 11 and scram is not None:
            self.writer.write(message(b"p", scram.final(body[4:])))
        elif code == 12 and scram is not None:
            scram.verify(body[4:])
        else:
            raise ConnectFailedAuth(f"unsupported authentication request {code}")
        return scram

    async def simple_query(self, sql: str) -> tuple[list[str], list[tuple[str | None, ...]], str]:
        """Run ``sql`` (simple protocol); columns, rows (text) and the last command tag."""
        self.writer.write(message(b"Q", sql.encode() + b"\0"))
        return await self._collect()

    async def extended_query(
        self, sql: str, params: Sequence[Any]
    ) -> tuple[list[str], list[tuple[str | None, ...]], str]:
        """Run ``sql`` with text parameters through the unnamed statement."""
        values = b"".join(
            _I32.pack(-1) if v is None else _I32.pack(len(t := str(v).encode())) + t for v in params
        )
        parse = b"\0" + sql.encode() + b"\0" + _I16.pack(0)
        bind = b"\0\0" + _I16.pack(0) + _I16.pack(len(params)) + values + _I16.pack(0)
        self.writer.write(
            message(b"P", parse)
            + message(b"B", bind)
            + message(b"D", b"P\0")
            + message(b"E", b"\0" + _I32.pack(0))
            + message(b"S")
        )
        return await self._collect()

    async def _collect(self) -> tuple[list[str], list[tuple[str | None, ...]], str]:
        columns: list[str] = []
        rows: list[tuple[str | None, ...]] = []
        tag = ""
        error: PgServerError | None = None
        while True:
            kind, body = await self.read_message()
            if kind == b"D":
                rows.append(_data_row(body))
            elif kind == b"T":
                columns, rows = _row_description(body), []
            elif kind == b"C":
                tag = body.rstrip(b"\0").decode()
            elif kind == b"E":
                error = PgServerError(error_fields(body))
            elif kind == b"Z":
                self.status = body[:1]
                if error is not None:
                    raise error
                return columns, rows, tag
            elif kind == b"G":
                self.writer.write(message(b"f", b"COPY is not supported here\0"))
            else:
                self._note(kind, body)


class ConnectFailedAuth(PoolError):
    """The server asked for an authentication this driver cannot answer."""


class _ScramClient:
    def __init__(self, password: str) -> None:
        self._password = password.encode()
        self._nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self._bare = f"n=,r={self._nonce}"
        self._signature = b""

    def first(self) -> bytes:
        return ("n,," + self._bare).encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(p.split("=", 1) for p in text.split(",") if "=" in p)
        nonce, salt, rounds = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self._nonce) or nonce == self._nonce:
            raise ConnectFailedAuth("SCRAM server nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac("sha256", self._password, salt, rounds)
        client_key = _hmac256(salted, b"Client Key")
        stored = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth = f"{self._bare},{text},{without_proof}".encode()
        proof = bytes(a ^ b for a, b in zip(client_key, _hmac256(stored, auth), strict=True))
        self._signature = _hmac256(_hmac256(salted, b"Server Key"), auth)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        text = server_final.decode()
        got = base64.b64decode(text[2:]) if text.startswith("v=") else b""
        if not hmac.compare_digest(got, self._signature):
            raise ConnectFailedAuth("SCRAM server signature does not match")


def _row_description(body: bytes) -> list[str]:
    (count,) = _I16.unpack_from(body, 0)
    names: list[str] = []
    pos = 2
    for _ in range(count):
        end = body.index(b"\0", pos)
        names.append(body[pos:end].decode())
        pos = end + 19
    return names


def _data_row(body: bytes) -> tuple[str | None, ...]:
    (count,) = _I16.unpack_from(body, 0)
    values: list[str | None] = []
    pos = 2
    for _ in range(count):
        (size,) = _I32.unpack_from(body, pos)
        pos += 4
        if size < 0:
            values.append(None)
        else:
            values.append(body[pos : pos + size].decode())
            pos += size
    return tuple(values)


async def send_cancel(host: str, port: int, pid: int, key: bytes, timeout: float = 5.0) -> None:
    """Ask the server to cancel what session ``pid`` runs (a new connection, no reply)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            body = _I32.pack(_CANCEL_CODE) + _I32.pack(pid) + key
            writer.write(_I32.pack(len(body) + 4) + body)
            await writer.drain()
            await reader.read(1)  # the server closes once it has read the request
        finally:
            writer.close()


class PgWireLease(Lease):
    kind: ClassVar[str] = "postgres"

    def __init__(self, owner: PgWirePool, slot: Slot[PgConnection]) -> None:
        super().__init__(owner, slot)
        self.connection: PgConnection = slot.conn

    @property
    def session_id(self) -> int:
        return self.connection.pid

    async def _query(self, sql: str, params: Sequence[Any]) -> QueryResult:
        conn = self.connection
        if params:
            columns, rows, tag = await conn.extended_query(sql, params)
        else:
            columns, rows, tag = await conn.simple_query(sql)
        return QueryResult(columns=columns, rows=list(rows), rowcount=tag_count(tag, len(rows)))

    async def _stream(
        self,
        sql: str,
        params: Sequence[Any],
        sink: RowSink,
        chunk_rows: int,
        max_rows: int | None,
    ) -> StreamResult:
        # The whole result is read, then handed over in chunks; the sink
        # refuses past max_rows.
        del max_rows
        result = await self._query(sql, params)
        for start in range(0, len(result.rows), chunk_rows):
            await sink(result.columns, result.rows[start : start + chunk_rows])
        return StreamResult(result.columns, result.rowcount)

    async def _execute_many(self, sql: str, params_seq: Sequence[Sequence[Any]]) -> int:
        conn = self.connection

        async def run() -> int:
            total = 0
            for params in params_seq:
                _, _, tag = await conn.extended_query(sql, params)
                total += tag_count(tag, 0)
            return total

        return await self._all_or_nothing(run)

    async def _begin(self) -> None:
        await self.connection.simple_query("BEGIN")

    async def _commit(self) -> None:
        await self.connection.simple_query("COMMIT")

    async def _rollback(self) -> None:
        await self.connection.simple_query("ROLLBACK")

    def _driver_in_transaction(self) -> bool:
        return self.connection.status != b"I"

    def _connection_closed(self) -> bool:
        return self.connection.is_closed()

    def _map_error(self, exc: Exception) -> PoolError | None:
        if isinstance(exc, PgServerError):
            state = exc.sqlstate
            if state.startswith("08") or state in _LOST_SQLSTATES:
                return ConnectionLost(f"PostgreSQL connection lost: {exc}")
            return DatabaseError(exc.message, code=state, sqlstate=state)
        if isinstance(exc, (OSError, asyncio.IncompleteReadError)):
            return ConnectionLost(f"PostgreSQL connection lost: {exc!r}")
        return None

    def _detach(self, discard: bool, *, reset_always: bool = True) -> tuple[Slot[Any], bool, bool]:
        conn = self.connection
        slot, reusable, needs = super()._detach(discard, reset_always=reset_always)
        # Bytes relayed by the lease holder bypass `_run`: the session tells.
        needs = needs or (reusable and (conn.dirty or conn.status != b"I"))
        return slot, reusable, needs


class PgWirePool(Pool):
    """A pool of raw PostgreSQL sessions (`PgConnection`) for relays."""

    kind: ClassVar[str] = "postgres"
    _driver_name: ClassVar[str] = "PostgreSQL"

    #: ParameterStatus values of the first session opened (what clients are told)
    server_params: dict[str, str]

    def __init__(self, config: DatabaseConfig) -> None:
        super().__init__(config)
        self.server_params = {}

    async def acquire_session(self, timeout: float | None = None) -> PgWireLease:
        """`acquire`, typed: the lease of a raw session."""
        lease = await self.acquire(timeout)
        assert isinstance(lease, PgWireLease)
        return lease

    async def _connect(self) -> PgConnection:
        conn = await PgConnection.open(self._config)
        if not self.server_params:
            self.server_params = dict(conn.params)
        return conn

    async def _ping(self, conn: PgConnection) -> None:
        await conn.simple_query("SELECT 1")

    async def _reset(self, conn: PgConnection) -> None:
        sql = RESET_SQL if conn.dirty else ""
        if len(conn.prepared) > conn.PREPARED_LIMIT:
            sql += "; DEALLOCATE ALL"
            conn.prepared.clear()
        if conn.status != b"I":
            sql = "ROLLBACK; " + sql if sql else "ROLLBACK"
        if not sql:
            return
        await conn.simple_query(sql)
        conn.dirty = False
        if conn.status != b"I":
            raise ConnectionLost("the session is still in a transaction after its reset")

    async def _close_connection(self, conn: PgConnection) -> None:
        await conn.close()

    def _terminate_connection(self, conn: PgConnection) -> None:
        conn.terminate()

    def _is_closed(self, conn: PgConnection) -> bool:
        return conn.is_closed()

    def _make_lease(self, slot: Slot[Any]) -> PgWireLease:
        return PgWireLease(self, slot)
