"""Sans-IO connection phase of the MySQL front door: greeting, client response, auth.

`greeting` builds Protocol::HandshakeV10; `parse_response` reads a client's
HandshakeResponse41 (or recognises an SSL request, which the front door
refuses); `verify` checks a scramble against the configured password for
``mysql_native_password`` and ``caching_sha2_password`` (the front door
knows the password, so a caching_sha2 scramble is checked here and answered
with fast-auth success: no RSA exchange, no TLS).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final

import msgspec

from .wire import (
    CLIENT_CONNECT_ATTRS,
    CLIENT_CONNECT_WITH_DB,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_SSL,
    SERVER_CAPABILITIES,
    SERVER_STATUS_AUTOCOMMIT,
    MalformedPacket,
    frame,
    read_lenenc_int,
    read_nul_string,
)

__all__ = [
    "CACHING_SHA2",
    "NATIVE",
    "HandshakeResponse",
    "SslRequest",
    "auth_switch",
    "fast_auth_ok",
    "greeting",
    "parse_response",
    "scramble_caching_sha2",
    "scramble_native",
    "verify",
]

NATIVE: Final = "mysql_native_password"
CACHING_SHA2: Final = "caching_sha2_password"
PLUGINS: Final = (NATIVE, CACHING_SHA2)
SCRAMBLE_LENGTH: Final = 20
#: utf8mb4_general_ci, the pool connections' character set
DEFAULT_COLLATION: Final = 45


class HandshakeResponse(msgspec.Struct, frozen=True):
    capabilities: int
    max_packet: int
    collation: int
    user: str
    auth_response: bytes
    database: str | None
    plugin: str | None


class SslRequest(msgspec.Struct, frozen=True):
    """A client asking to switch to TLS (refused: the front door speaks plain TCP)."""

    capabilities: int


def greeting(connection_id: int, scramble: bytes, server_version: str, plugin: str) -> bytes:
    """The server's first packet (sequence number 0)."""
    caps = SERVER_CAPABILITIES
    body = b"".join(
        (
            b"\x0a",
            server_version.encode("ascii", "replace") + b"\0",
            struct.pack("<I", connection_id & 0xFFFFFFFF),
            scramble[:8],
            b"\0",
            struct.pack(
                "<HBHH", caps & 0xFFFF, DEFAULT_COLLATION, SERVER_STATUS_AUTOCOMMIT, caps >> 16
            ),
            bytes((SCRAMBLE_LENGTH + 1,)),
            b"\0" * 10,  # reserved (MariaDB's extended capabilities: none)
            scramble[8:SCRAMBLE_LENGTH] + b"\0",
            plugin.encode("ascii") + b"\0",
        )
    )
    return frame(0, body)


def parse_response(body: bytes) -> HandshakeResponse | SslRequest:
    """Read a HandshakeResponse41; raises `MalformedPacket`."""
    if len(body) < 32:
        raise MalformedPacket(f"handshake response of {len(body)} bytes (at least 32 expected)")
    caps, max_packet, collation = struct.unpack_from("<IIB", body, 0)
    if not caps & CLIENT_PROTOCOL_41:
        raise MalformedPacket("the client does not speak protocol 4.1")
    if caps & CLIENT_SSL and len(body) == 32:
        return SslRequest(caps)
    pos = 32
    user_b, pos = read_nul_string(body, pos)
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        n, pos = read_lenenc_int(body, pos)
    elif caps & CLIENT_SECURE_CONNECTION:
        if pos >= len(body):
            raise MalformedPacket("handshake response ends before the auth data")
        n, pos = body[pos], pos + 1
    else:
        raise MalformedPacket("the client does not support secure authentication")
    if pos + n > len(body):
        raise MalformedPacket("auth data runs past the end of the handshake response")
    auth = body[pos : pos + n]
    pos += n
    database: str | None = None
    if caps & CLIENT_CONNECT_WITH_DB and pos < len(body):
        db_b, pos = read_nul_string(body, pos)
        database = _text(db_b) or None
    plugin: str | None = None
    if caps & CLIENT_PLUGIN_AUTH and pos < len(body):
        plugin_b, pos = read_nul_string(body, pos)
        plugin = _text(plugin_b)
    if caps & CLIENT_CONNECT_ATTRS and pos < len(body):
        n, pos = read_lenenc_int(body, pos)  # attributes: checked for length only
        if pos + n > len(body):
            raise MalformedPacket("connection attributes run past the end of the packet")
    return HandshakeResponse(caps, max_packet, collation, _text(user_b), auth, database, plugin)


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("a name in the handshake response is not UTF-8") from None


def auth_switch(seq: int, plugin: str, scramble: bytes) -> bytes:
    """AuthSwitchRequest: answer with ``plugin``'s scramble of this nonce."""
    return frame(seq, b"\xfe" + plugin.encode("ascii") + b"\0" + scramble + b"\0")


def fast_auth_ok(seq: int) -> bytes:
    """caching_sha2_password's "fast authentication succeeded" (an OK follows)."""
    return frame(seq, b"\x01\x03")


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def scramble_native(password: bytes, nonce: bytes) -> bytes:
    """What a client sends for mysql_native_password (empty for an empty password)."""
    if not password:
        return b""
    stage1 = _sha1(password)
    return _xor(stage1, _sha1(nonce[:SCRAMBLE_LENGTH] + _sha1(stage1)))


def scramble_caching_sha2(password: bytes, nonce: bytes) -> bytes:
    """What a client sends for caching_sha2_password (empty for an empty password)."""
    if not password:
        return b""
    p1 = _sha256(password)
    return _xor(p1, _sha256(_sha256(p1) + nonce[:SCRAMBLE_LENGTH]))


def verify(plugin: str, password: str, nonce: bytes, response: bytes) -> bool:
    """True if ``response`` proves knowledge of ``password`` for this nonce."""
    secret = password.encode("utf-8")
    if response in (b"", b"\0"):
        return not secret
    if plugin == NATIVE:
        expected = [scramble_native(secret, nonce)]
    elif plugin == CACHING_SHA2:
        # aiomysql 0.3 hashes the nonce of an auth switch with its trailing NUL
        expected = [scramble_caching_sha2(secret, nonce), _caching_sha2_nul(secret, nonce)]
    else:
        return False
    return any(hmac.compare_digest(e, response) for e in expected)


def _caching_sha2_nul(password: bytes, nonce: bytes) -> bytes:
    p1 = _sha256(password)
    return _xor(p1, _sha256(_sha256(p1) + nonce[:SCRAMBLE_LENGTH] + b"\0"))
