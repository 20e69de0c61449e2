"""fabric_pgwire: a minimal PostgreSQL client for componentize-py guests.

Standard library only (no ``ssl``, no ``_hashlib``, no C extensions exist
inside a guest), one blocking ``socket``, protocol 3.0, the simple query
protocol with text results.  Works on CPython 3.11 and later (componentize-py
bundles 3.14).  It exists so that benchmarks can compare a component that
borrows a pooled connection from the dbpool service with the same component
connecting to PostgreSQL directly on every invocation.

    import fabric_pgwire

    conn = fabric_pgwire.connect(port=5432, user="app", password="s3cret", database="test")
    try:
        columns, rows = conn.query("SELECT 1 AS one, NULL AS nothing")
        # (["one", "nothing"], [("1", None)])
    finally:
        conn.close()

Authentication: trust, cleartext password, md5, and SCRAM-SHA-256 (without
channel binding; the server's signature is verified).  TLS is not offered:
no SSLRequest is sent.  The password goes into SCRAM as its UTF-8 bytes
(no SASLprep), which matches the server for every ASCII password.

Errors: ``PgError(sqlstate, message)`` for an ErrorResponse from the server;
``ProtocolError`` for a malformed or unexpected message, an unsupported
authentication method or a server that fails SCRAM verification; socket
failures propagate as ``OSError`` (``TimeoutError``, ``ConnectionRefusedError``...).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import struct
from collections.abc import Callable

__all__ = [
    "PBKDF2_IMPLEMENTATION",
    "Connection",
    "PgError",
    "PgWireError",
    "ProtocolError",
    "ScramSha256",
    "connect",
    "pbkdf2_sha256",
]

PROTOCOL_VERSION = 196608  # 3.0
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_HEADER = struct.Struct("!ci")
#: largest server message this client will buffer
MAX_MESSAGE_SIZE = 1 << 30


class PgWireError(Exception):
    """Base class of this module's errors."""


class PgError(PgWireError):
    """An ErrorResponse: ``sqlstate`` ("42601"...), ``message``, and every ``fields`` code."""

    def __init__(self, sqlstate: str, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(f"[{sqlstate}] {message}")
        self.sqlstate = sqlstate
        self.message = message
        self.fields = fields or {}


class ProtocolError(PgWireError):
    """The server sent something this client cannot accept."""


# ------------------------------------------------------------------ SCRAM (sans-IO)


def _pbkdf2_sha256_pure(password: bytes, salt: bytes, iterations: int) -> bytes:
    """PBKDF2-HMAC-SHA256 for one 32-byte block (RFC 8018) on ``hmac.digest``.

    Inside a guest ``hmac.digest`` is CPython's built-in HACL* HMAC, one C
    call per iteration: 4096 iterations take 11-25 ms there (keyed-state
    copies of ``hashlib.sha256`` measured 10-15% slower).
    """
    digest = hmac.digest
    block = digest(password, salt + b"\x00\x00\x00\x01", "sha256")  # INT(1): one block
    acc = int.from_bytes(block, "big")
    for _ in range(iterations - 1):
        block = digest(password, block, "sha256")
        acc ^= int.from_bytes(block, "big")
    return acc.to_bytes(32, "big")


def _pbkdf2_sha256_hashlib(password: bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password, salt, iterations)


#: PBKDF2-HMAC-SHA256: ``hashlib.pbkdf2_hmac`` where it exists (it needs
#: OpenSSL, absent inside a guest), else a Python loop over ``hmac.digest``.
pbkdf2_sha256: Callable[[bytes, bytes, int], bytes] = (
    _pbkdf2_sha256_hashlib if hasattr(hashlib, "pbkdf2_hmac") else _pbkdf2_sha256_pure
)
PBKDF2_IMPLEMENTATION = "hashlib" if hasattr(hashlib, "pbkdf2_hmac") else "pure"


def _hmac256(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


class ScramSha256:
    """The client side of SCRAM-SHA-256 (RFC 5802/7677), no channel binding.

    ``client_first()`` -> send; ``client_final(server_first)`` -> send;
    ``verify(server_final)`` raises `ProtocolError` unless the server proved
    it knows the password.  PostgreSQL ignores the SCRAM user name (it uses
    the startup packet's), so ``user`` defaults to "".
    """

    MECHANISM = "SCRAM-SHA-256"

    def __init__(self, password: str, user: str = "", nonce: str | None = None) -> None:
        self._password = password.encode("utf-8")
        self._nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        name = user.replace("=", "=3D").replace(",", "=2C")
        self._first_bare = f"n={name},r={self._nonce}"
        self._server_signature: bytes | None = None

    def client_first(self) -> bytes:
        return ("n,," + self._first_bare).encode("utf-8")

    def client_final(self, server_first: bytes) -> bytes:
        text = server_first.decode("utf-8")
        attrs = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
        try:
            nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        except (KeyError, ValueError) as exc:
            raise ProtocolError(f"malformed SCRAM server-first message: {text!r}") from exc
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise ProtocolError("SCRAM server nonce does not extend the client nonce")
        if iterations < 1:
            raise ProtocolError(f"SCRAM iteration count {iterations}")
        salted = pbkdf2_sha256(self._password, salt, iterations)
        client_key = _hmac256(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"  # biws = base64("n,,")
        auth_message = f"{self._first_bare},{text},{without_proof}".encode()
        proof = _xor(client_key, _hmac256(stored_key, auth_message))
        self._server_signature = _hmac256(_hmac256(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}".encode("ascii")

    def verify(self, server_final: bytes) -> None:
        text = server_final.decode("utf-8")
        if self._server_signature is None:
            raise ProtocolError("SCRAM server-final message before client-final")
        if text.startswith("e="):
            raise ProtocolError(f"SCRAM authentication failed: {text[2:]}")
        signature = base64.b64decode(text[2:]) if text.startswith("v=") else b""
        if not hmac.compare_digest(signature, self._server_signature):
            raise ProtocolError("SCRAM server signature does not match: not the real server")


# ------------------------------------------------------------ message codecs


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + _I32.pack(len(body) + 4) + body


def _cstr(text: str) -> bytes:
    return text.encode("utf-8") + b"\x00"


def startup_message(params: dict[str, str]) -> bytes:
    body = _I32.pack(PROTOCOL_VERSION)
    body += b"".join(_cstr(k) + _cstr(v) for k, v in params.items()) + b"\x00"
    return _I32.pack(len(body) + 4) + body


def parse_error(body: bytes) -> PgError:
    """An ErrorResponse body as a `PgError` (fields by their one-letter codes)."""
    fields: dict[str, str] = {}
    for part in body.split(b"\x00"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return PgError(fields.get("C", "XX000"), fields.get("M", "unknown error"), fields)


def parse_row_description(body: bytes) -> list[str]:
    (count,) = _I16.unpack_from(body, 0)
    names: list[str] = []
    pos = 2
    for _ in range(count):
        end = body.index(b"\x00", pos)
        names.append(body[pos:end].decode("utf-8"))
        pos = end + 1 + 18  # table oid, column, type oid, size, modifier, format
    return names


def parse_data_row(body: bytes) -> tuple[str | None, ...]:
    (count,) = _I16.unpack_from(body, 0)
    values: list[str | None] = []
    pos = 2
    for _ in range(count):
        (size,) = _I32.unpack_from(body, pos)
        pos += 4
        if size < 0:
            values.append(None)
        else:
            values.append(body[pos : pos + size].decode("utf-8"))
            pos += size
    return tuple(values)


# ------------------------------------------------------------------ connection


class Connection:
    """One session.  Blocking, not thread-safe, one query at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        self.parameters: dict[str, str] = {}  # ParameterStatus values (server_version...)
        self.backend_pid: int | None = None
        self.command_tag: str | None = None  # of the last statement run
        self.auth_method: str | None = None  # trust, cleartext, md5, SCRAM-SHA-256
        self.queries = 0
        self.closed = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<fabric_pgwire.Connection {state} pid={self.backend_pid} queries={self.queries}>"

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- I/O

    def _recv(self) -> tuple[bytes, bytes]:
        """The next message as (type byte, body)."""
        buf = self._buf
        while True:
            if len(buf) >= 5:
                kind, size = _HEADER.unpack_from(buf, 0)
                if size < 4 or size > MAX_MESSAGE_SIZE:
                    raise ProtocolError(f"bad message length {size} (type {kind!r})")
                if len(buf) >= size + 1:
                    body = bytes(buf[5 : size + 1])
                    del buf[: size + 1]
                    return kind, body
            chunk = self._sock.recv(65536)
            if not chunk:
                self.closed = True
                raise ConnectionResetError("PostgreSQL closed the connection")
            buf += chunk

    def _send(self, data: bytes) -> None:
        self._sock.sendall(data)

    # -- startup

    def _startup(self, user: str, password: str | None, database: str) -> None:
        self._send(startup_message({"user": user, "database": database}))
        scram: ScramSha256 | None = None
        while True:
            kind, body = self._recv()
            if kind == b"R":
                scram = self._authenticate(body, user, password, scram)
            elif kind == b"S":
                name, value, _ = body.split(b"\x00", 2)
                self.parameters[name.decode()] = value.decode()
            elif kind == b"K":
                self.backend_pid = _I32.unpack_from(body, 0)[0]
            elif kind == b"Z":
                return
            elif kind == b"E":
                raise parse_error(body)
            elif kind != b"N":
                raise ProtocolError(f"unexpected message {kind!r} during startup")

    def _authenticate(
        self, body: bytes, user: str, password: str | None, scram: ScramSha256 | None
    ) -> ScramSha256 | None:
        (code,) = _I32.unpack_from(body, 0)
        if code == 0:  # AuthenticationOk
            self.auth_method = self.auth_method or "trust"
            return scram
        if code in (3, 5, 10) and password is None:
            raise ProtocolError("the server asks for a password and none was given")
        if code == 3:  # AuthenticationCleartextPassword
            self.auth_method = "cleartext"
            self._send(_message(b"p", _cstr(password or "")))
        elif code == 5:  # AuthenticationMD5Password
            self.auth_method = "md5"
            inner = hashlib.md5((password or "").encode() + user.encode()).hexdigest()
            outer = hashlib.md5(inner.encode("ascii") + body[4:8]).hexdigest()
            self._send(_message(b"p", _cstr("md5" + outer)))
        elif code == 10:  # AuthenticationSASL: mechanisms offered
            mechanisms = [m.decode() for m in body[4:].split(b"\x00") if m]
            if ScramSha256.MECHANISM not in mechanisms:
                raise ProtocolError(f"no supported SASL mechanism in {mechanisms}")
            self.auth_method = ScramSha256.MECHANISM
            scram = ScramSha256(password or "")
            first = scram.client_first()
            payload = _cstr(ScramSha256.MECHANISM) + _I32.pack(len(first)) + first
            self._send(_message(b"p", payload))
        elif code == 11 and scram is not None:  # AuthenticationSASLContinue
            self._send(_message(b"p", scram.client_final(body[4:])))
        elif code == 12 and scram is not None:  # AuthenticationSASLFinal
            scram.verify(body[4:])
        else:
            raise ProtocolError(f"unsupported authentication request {code}")
        return scram

    # -- public API

    def query(self, sql: str) -> tuple[list[str], list[tuple[str | None, ...]]]:
        """Run ``sql`` with the simple query protocol; values come back as text.

        Returns the columns and rows of the last statement that returned rows
        (``([], [])`` when none did).  Raises `PgError` once the server is
        ready again after an ErrorResponse.
        """
        if self.closed:
            raise PgWireError("connection is closed")
        self._send(_message(b"Q", _cstr(sql)))
        self.queries += 1
        columns: list[str] = []
        rows: list[tuple[str | None, ...]] = []
        error: PgError | None = None
        while True:
            kind, body = self._recv()
            if kind == b"D":
                rows.append(parse_data_row(body))
            elif kind == b"T":
                columns, rows = parse_row_description(body), []
            elif kind == b"C":
                self.command_tag = body.rstrip(b"\x00").decode()
            elif kind == b"E":
                error = parse_error(body)
            elif kind == b"Z":
                if error is not None:
                    raise error
                return columns, rows
            elif kind == b"G":  # COPY FROM STDIN: refuse it
                self._send(_message(b"f", _cstr("COPY is not supported by fabric_pgwire")))
            elif kind == b"S":
                name, value, _ = body.split(b"\x00", 2)
                self.parameters[name.decode()] = value.decode()
            elif kind not in (b"I", b"N", b"A", b"H", b"d", b"c"):
                raise ProtocolError(f"unexpected message {kind!r} during a query")

    def close(self) -> None:
        """Send Terminate and close the socket.  Idempotent."""
        if self.closed:
            self._sock.close()
            return
        self.closed = True
        try:
            self._send(_message(b"X", b""))
        except OSError:
            pass
        finally:
            self._sock.close()


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
    return socket.create_connection((host, port), timeout=timeout)


def connect(
    host: str = "127.0.0.1",
    port: int = 5432,
    *,
    user: str,
    password: str | None = None,
    database: str | None = None,
    timeout: float | None = 10,
) -> Connection:
    """Open a session; ``timeout`` (seconds, None = none) bounds each socket operation.

    ``database`` defaults to ``user``, as with libpq.
    """
    sock = _open_socket(host, port, timeout)
    try:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not every socket layer has Nagle to turn off
        conn = Connection(sock)
        conn._startup(user, password, database or user)
    except BaseException:
        sock.close()
        raise
    return conn
