"""PostgreSQL protocol v3: the messages the front door builds, and the startup
packet it parses. Sans-IO: bytes in, values or bytes out."""

from __future__ import annotations

import struct

import msgspec

__all__ = [
    "CANCEL_REQUEST",
    "GSSENC_REQUEST",
    "MAX_STARTUP_PACKET",
    "SSL_REQUEST",
    "BadStartup",
    "CancelRequest",
    "EncryptionRequest",
    "Startup",
    "auth_request",
    "backend_key_data",
    "error_response",
    "message",
    "parameter_status",
    "parse_startup",
    "ready_for_query",
]

I16 = struct.Struct("!h")
I32 = struct.Struct("!i")
PROTOCOL_3_0 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
#: PostgreSQL's own bound on a startup packet (MAX_STARTUP_PACKET_LENGTH)
MAX_STARTUP_PACKET = 10000

PARSE_COMPLETE = b"1\x00\x00\x00\x04"
CLOSE_COMPLETE = b"3\x00\x00\x00\x04"


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + I32.pack(len(body) + 4) + body


def error_response(
    sqlstate: str, text: str, *, severity: str = "ERROR", hint: str | None = None
) -> bytes:
    """An ErrorResponse (severity ERROR or FATAL) with a SQLSTATE."""
    fields = [
        b"S" + severity.encode(),
        b"V" + severity.encode(),
        b"C" + sqlstate.encode(),
        b"M" + text.encode(),
    ]
    if hint:
        fields.append(b"H" + hint.encode())
    return message(b"E", b"\0".join(fields) + b"\0\0")


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", name.encode() + b"\0" + value.encode() + b"\0")


def backend_key_data(pid: int, key: bytes) -> bytes:
    return message(b"K", I32.pack(pid) + key)


def ready_for_query(status: bytes = b"I") -> bytes:
    return message(b"Z", status)


def auth_request(code: int, data: bytes = b"") -> bytes:
    """AuthenticationOk (0), SASL (10), SASLContinue (11), SASLFinal (12)."""
    return message(b"R", I32.pack(code) + data)


class Startup(msgspec.Struct, frozen=True):
    """A StartupMessage: protocol minor version asked for, and its parameters."""

    minor: int
    params: dict[str, str]


class CancelRequest(msgspec.Struct, frozen=True):
    pid: int
    key: bytes


class EncryptionRequest(msgspec.Struct, frozen=True):
    """SSLRequest or GSSENCRequest: answered with 'N', then a startup follows."""

    code: int


class BadStartup(Exception):
    """A startup packet the front door refuses; answered with a FATAL ErrorResponse."""

    def __init__(self, sqlstate: str, text: str) -> None:
        super().__init__(text)
        self.sqlstate = sqlstate
        self.text = text


def startup_length(header: bytes) -> int:
    """The length of the startup packet whose first 4 bytes are ``header``."""
    size: int = I32.unpack(header)[0]
    if not 8 <= size <= MAX_STARTUP_PACKET:
        raise BadStartup("08P01", f"invalid length of startup packet: {size}")
    return size


def parse_startup(packet: bytes) -> Startup | CancelRequest | EncryptionRequest:
    """Parse a whole startup packet (length prefix included)."""
    size = startup_length(packet[:4])
    if size != len(packet):
        raise BadStartup("08P01", "incomplete startup packet")
    (code,) = I32.unpack_from(packet, 4)
    if code in (SSL_REQUEST, GSSENC_REQUEST):
        if size != 8:
            raise BadStartup("08P01", "invalid length of encryption request")
        return EncryptionRequest(code)
    if code == CANCEL_REQUEST:
        if not 16 <= size <= 8 + 4 + 256:
            raise BadStartup("08P01", "invalid length of cancel request")
        return CancelRequest(I32.unpack_from(packet, 8)[0], bytes(packet[12:]))
    major, minor = code >> 16, code & 0xFFFF
    if major != 3:
        raise BadStartup(
            "0A000",
            f"unsupported frontend protocol {major}.{minor}: server supports 3.0",
        )
    parts = bytes(packet[8:]).split(b"\0")
    if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"" or len(parts) % 2 != 0:
        raise BadStartup("08P01", "invalid startup packet layout: expected terminator")
    params: dict[str, str] = {}
    try:
        for i in range(0, len(parts) - 2, 2):
            params[parts[i].decode()] = parts[i + 1].decode()
    except UnicodeDecodeError:
        raise BadStartup("08P01", "startup packet is not valid UTF-8") from None
    if not params.get("user"):
        raise BadStartup("28000", "no PostgreSQL user name specified in startup packet")
    return Startup(minor, params)


def negotiate_protocol_version(unrecognized: list[str]) -> bytes:
    """NegotiateProtocolVersion: we speak 3.0; name the options we ignored."""
    body = I32.pack(PROTOCOL_3_0) + I32.pack(len(unrecognized))
    body += b"".join(name.encode() + b"\0" for name in unrecognized)
    return message(b"v", body)
