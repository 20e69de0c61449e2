"""Sans-IO core of the dbpool wire protocol (version 1).

Theory of operation
-------------------
A connection starts with a fixed-size handshake, then carries frames::

    client -> server   hello   b"FDBP" u16 version u16 flags            (8 bytes)
    server -> client   hello   b"FDBP" u16 version u16 status
                               u32 max_frame_size u32 max_in_flight      (16 bytes)
    both ways          frame   u32 length (big-endian), `length` bytes of msgpack

`ServerConnection` and `ClientConnection` are plain state machines in the
style of h11: feed bytes with ``receive_data`` (``b""`` means EOF), pull
events with ``next_event`` (a message, a hello, `ConnectionClosed` or
`NEED_DATA`), and turn outgoing messages into bytes with ``send``.  They do
no I/O and never block.  Anything the peer sends that breaks the protocol
raises `RemoteProtocolError` (with a wire error ``code``); misuse by the
caller raises `LocalProtocolError`.  Every state change goes through the
transition tables below, so the table is the whole state machine.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, Final, Generic, TypeVar

import msgspec

from fabric.errors import FabricError

from . import codec
from .messages import (
    Auth,
    Begin,
    Challenge,
    Commit,
    DatabaseStats,
    Done,
    Error,
    ExecuteMany,
    Limits,
    Ping,
    Pong,
    Query,
    Request,
    Response,
    Rollback,
    Rows,
    ServerStats,
    Stats,
    StatsReply,
)

__all__ = [
    "CLIENT_HELLO",
    "FRAME_HEADER",
    "MAGIC",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "SERVER_HELLO",
    "SUPPORTED_VERSIONS",
    "Auth",
    "Begin",
    "Challenge",
    "ClientConnection",
    "ClientHello",
    "Commit",
    "ConnectionClosed",
    "DatabaseStats",
    "Done",
    "Error",
    "ExecuteMany",
    "FrameTooLarge",
    "HandshakeRejected",
    "HandshakeStatus",
    "Limits",
    "LocalProtocolError",
    "Ping",
    "Pong",
    "ProtocolError",
    "Query",
    "RemoteProtocolError",
    "Request",
    "Response",
    "Rollback",
    "Rows",
    "ServerConnection",
    "ServerHello",
    "ServerStats",
    "State",
    "Stats",
    "StatsReply",
]

MAGIC: Final = b"FDBP"
PROTOCOL_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = frozenset({1})
CLIENT_HELLO: Final = struct.Struct(">4sHH")
SERVER_HELLO: Final = struct.Struct(">4sHHII")
FRAME_HEADER: Final = struct.Struct(">I")


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData.NEED_DATA


class HandshakeStatus(enum.IntEnum):
    OK = 0
    UNSUPPORTED_VERSION = 1
    TOO_MANY_CLIENTS = 2
    SERVER_CLOSING = 3
    AUTH_REQUIRED = 4  # accepted, but the client must answer a challenge first
    UNSUPPORTED_FLAGS = 5  # the client hello set reserved flags


class State(enum.Enum):
    AWAIT_HELLO = "AWAIT_HELLO"  # server: waiting for the client hello
    HELLO_RECEIVED = "HELLO_RECEIVED"  # server: hello parsed, accept/reject not yet sent
    START = "START"  # client: hello not yet sent
    AWAIT_ACCEPT = "AWAIT_ACCEPT"  # client: hello sent, server hello not yet received
    AUTH = "AUTH"  # hello accepted with auth_required: challenge, auth, then OPEN
    OPEN = "OPEN"  # frames flow both ways
    ERROR = "ERROR"  # the peer broke the protocol; only close() is left
    CLOSED = "CLOSED"  # EOF seen or connection closed by us

    # identity hash in C (members are singletons), not Enum's Python-level one
    __hash__ = object.__hash__


# --------------------------------------------------------------------------- errors


class ProtocolError(FabricError):
    """Base of the protocol's errors; ``code`` is the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; the connection is unusable."""


class FrameTooLarge(ProtocolError):
    """An outgoing message is bigger than the limit; nothing was sent and the
    connection stays usable.  (An incoming frame over the limit raises
    `RemoteProtocolError` with the same code.)"""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__("frame_too_large", f"frame of {size} bytes exceeds limit of {limit}")
        self.size = size
        self.limit = limit


class HandshakeRejected(RemoteProtocolError):
    def __init__(self, status: int, server_version: int) -> None:
        try:
            name = HandshakeStatus(status).name.lower()
        except ValueError:
            name = f"status_{status}"
        super().__init__(name, f"server refused the handshake ({name}, server v{server_version})")
        self.status = status
        self.server_version = server_version


class LocalProtocolError(ProtocolError):
    """The caller used the connection object wrongly (a bug on our side)."""

    def __init__(self, role: str, state: State, event: str) -> None:
        super().__init__("local_protocol_error", f"{role}: {event!r} not allowed in {state.name}")
        self.role = role
        self.state = state
        self.event = event


# --------------------------------------------------------------------------- events


class ClientHello(msgspec.Struct, frozen=True):
    version: int
    flags: int


class ServerHello(msgspec.Struct, frozen=True):
    version: int
    max_frame_size: int
    max_in_flight: int
    auth_required: bool = False


class ConnectionClosed(msgspec.Struct, frozen=True):
    """The peer closed its side cleanly at a frame boundary."""


# ---------------------------------------------------------------------- transitions

_SERVER_TRANSITIONS: Final[dict[State, dict[str, State]]] = {
    State.AWAIT_HELLO: {"recv_hello": State.HELLO_RECEIVED},
    State.HELLO_RECEIVED: {
        "accept": State.OPEN,
        "accept_auth": State.AUTH,
        "reject": State.CLOSED,
    },
    State.AUTH: {"recv_frame": State.AUTH, "send_frame": State.AUTH, "authenticated": State.OPEN},
    State.OPEN: {"recv_frame": State.OPEN, "send_frame": State.OPEN},
    State.ERROR: {},
    State.CLOSED: {},
}
_CLIENT_TRANSITIONS: Final[dict[State, dict[str, State]]] = {
    State.START: {"send_hello": State.AWAIT_ACCEPT},
    # requests may be pipelined behind the hello
    State.AWAIT_ACCEPT: {
        "recv_accept": State.OPEN,
        "recv_auth": State.AUTH,
        "send_frame": State.AWAIT_ACCEPT,
    },
    State.AUTH: {"recv_frame": State.AUTH, "send_frame": State.AUTH, "authenticated": State.OPEN},
    State.OPEN: {"recv_frame": State.OPEN, "send_frame": State.OPEN},
    State.ERROR: {},
    State.CLOSED: {},
}
# Common to both roles: EOF from the peer, a protocol error by the peer, and
# closing from our side.
for _table in (_SERVER_TRANSITIONS, _CLIENT_TRANSITIONS):
    for _state, _moves in _table.items():
        _moves["close"] = State.CLOSED
        if _state not in (State.ERROR, State.CLOSED):
            _moves["eof"] = State.CLOSED
            _moves["error"] = State.ERROR


# The same tables with each move's target carrying its own moves, so a
# transition looks up nothing by state (an Enum member hashes in Python).
_Moves = dict[str, tuple[State, "_Moves"]]


def _linked(table: dict[State, dict[str, State]]) -> dict[State, _Moves]:
    linked: dict[State, _Moves] = {state: {} for state in table}
    for state, moves in table.items():
        for event, new in moves.items():
            linked[state][event] = (new, linked[new])
    return linked


_SERVER_MOVES = _linked(_SERVER_TRANSITIONS)
_CLIENT_MOVES = _linked(_CLIENT_TRANSITIONS)

_In = TypeVar("_In")
_Out = TypeVar("_Out")


# Building a decoder for a tagged union costs tens of microseconds: one per
# message type for the process, shared by every connection (msgspec decoders
# and encoders keep no state between calls).
_DECODERS: dict[Any, msgspec.msgpack.Decoder[Any]] = {}
_ENCODER = msgspec.msgpack.Encoder()


def _decoder(in_type: Any) -> msgspec.msgpack.Decoder[Any]:
    decoder = _DECODERS.get(in_type)
    if decoder is None:
        decoder = _DECODERS[in_type] = msgspec.msgpack.Decoder(in_type, ext_hook=codec.ext_hook)
    return decoder


class _Connection(Generic[_In, _Out]):
    _role: str
    _table: dict[State, _Moves]

    def __init__(self, state: State, in_type: Any, max_frame_size: int) -> None:
        self.state = state
        self._moves = self._table[state]  # the moves out of ``state``
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._eof = False
        self._decoder: msgspec.msgpack.Decoder[_In] = _decoder(in_type)
        self._encoder = _ENCODER

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state.name} buffered={len(self._buf)}>"

    def _do(self, event: str) -> None:
        move = self._moves.get(event)
        if move is None:
            raise LocalProtocolError(self._role, self.state, event)
        self.state, self._moves = move

    def _fail(self, exc: RemoteProtocolError) -> RemoteProtocolError:
        self._do("error")
        self._buf.clear()
        return exc

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` signals EOF."""
        if self._eof and data:
            raise LocalProtocolError(self._role, self.state, "receive_data after EOF")
        if data:
            self._buf += data
        else:
            self._eof = True

    @property
    def bytes_buffered(self) -> int:
        return len(self._buf)

    def _eof_event(self, what: str) -> ConnectionClosed:
        if self._buf:
            raise self._fail(
                RemoteProtocolError("protocol_error", f"connection closed in the middle of {what}")
            )
        self._do("eof")
        return ConnectionClosed()

    def _next_frame(self) -> _In | _NeedData | ConnectionClosed:
        buf = self._buf
        if len(buf) < 4:
            return self._eof_event("a frame header") if self._eof else NEED_DATA
        (size,) = FRAME_HEADER.unpack_from(buf)
        if size > self.max_frame_size:
            raise self._fail(
                RemoteProtocolError(
                    "frame_too_large",
                    f"frame of {size} bytes exceeds limit of {self.max_frame_size}",
                )
            )
        if len(buf) < 4 + size:
            return self._eof_event("a frame") if self._eof else NEED_DATA
        body = buf[4 : 4 + size]  # one copy; msgspec decodes a bytearray as it is
        del buf[: 4 + size]
        try:
            msg = self._decoder.decode(body)
        except Exception as exc:  # untrusted bytes: every decoder failure is the peer's fault
            raise self._fail(
                RemoteProtocolError("protocol_error", f"malformed frame: {exc}")
            ) from exc
        self._do("recv_frame")
        return msg

    def _frame(self, msg: _Out, limit: int) -> bytes:
        out = bytearray(4)
        self._encoder.encode_into(msg, out, 4)
        size = len(out) - 4
        if size > limit:
            raise FrameTooLarge(size, limit)
        FRAME_HEADER.pack_into(out, 0, size)
        return bytes(out)


class ServerConnection(_Connection[Request, Response]):
    """Server side of one client connection."""

    _role = "server"
    _table = _SERVER_MOVES

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        super().__init__(State.AWAIT_HELLO, Request, self.limits.max_frame_size)
        self.client_version: int | None = None
        self.client_flags = 0
        self._accepted = False

    def next_event(self) -> ClientHello | Request | ConnectionClosed | _NeedData:
        if self.state is State.AWAIT_HELLO:
            if len(self._buf) < CLIENT_HELLO.size:
                return self._eof_event("the hello") if self._eof else NEED_DATA
            magic, version, flags = CLIENT_HELLO.unpack_from(self._buf)
            if magic != MAGIC:
                raise self._fail(
                    RemoteProtocolError("bad_magic", f"not a dbpool client: {magic!r}")
                )
            del self._buf[: CLIENT_HELLO.size]
            self._do("recv_hello")
            self.client_version = version
            self.client_flags = flags
            return ClientHello(version, flags)
        if self.state in (State.OPEN, State.AUTH):
            return self._next_frame()
        if self.state is State.CLOSED:
            return ConnectionClosed()
        raise LocalProtocolError(self._role, self.state, "next_event")

    @property
    def version_supported(self) -> bool:
        return self.client_version in SUPPORTED_VERSIONS

    def accept(self, *, auth_required: bool = False) -> bytes:
        """Answer the hello; refuses (and closes) if the client's version is unsupported
        or it sets flags (reserved: they must be 0).

        With ``auth_required`` the status is ``auth_required`` and the connection
        enters `State.AUTH`: send a `Challenge`, read the client's `Auth`, then
        call `authenticated` (or `close` with ``auth_failed``)."""
        if not self.version_supported:
            return self.reject(HandshakeStatus.UNSUPPORTED_VERSION)
        if self.client_flags != 0:
            return self.reject(HandshakeStatus.UNSUPPORTED_FLAGS)
        self._do("accept_auth" if auth_required else "accept")
        self._accepted = True
        lim = self.limits
        status = HandshakeStatus.AUTH_REQUIRED if auth_required else HandshakeStatus.OK
        return SERVER_HELLO.pack(
            MAGIC, PROTOCOL_VERSION, status, lim.max_frame_size, lim.max_in_flight
        )

    def authenticated(self) -> None:
        """The client's `Auth` was verified: frames flow."""
        self._do("authenticated")

    def reject(self, status: HandshakeStatus) -> bytes:
        self._do("reject")
        return SERVER_HELLO.pack(MAGIC, PROTOCOL_VERSION, status, 0, 0)

    def send(self, msg: Response) -> bytes:
        """Frame a response, mapping row values to their wire forms (`codec`);
        raises `FrameTooLarge` past ``limits.max_result_size``."""
        self._do("send_frame")
        if isinstance(msg, Rows):
            msg = msgspec.structs.replace(msg, rows=codec.rows_to_wire(msg.rows))
        return self._frame(msg, self.limits.max_result_size)

    def send_encoded(self, msg: msgspec.Struct) -> bytearray:
        """Frame a response whose row values are already in wire form (a streamed
        result, `results.RowsBuilder`); raises `FrameTooLarge` past
        ``limits.max_result_size``. Returns the frame without an extra copy."""
        self._do("send_frame")
        out = bytearray(4)
        self._encoder.encode_into(msg, out, 4)
        size = len(out) - 4
        if size > self.limits.max_result_size:
            raise FrameTooLarge(size, self.limits.max_result_size)
        FRAME_HEADER.pack_into(out, 0, size)
        return out

    def close(self, code: str, message: str) -> bytes:
        """Close from our side: the bytes to send last (an id-0 error frame once the
        handshake is done, nothing before)."""
        handshake_done = self._accepted and self.state is not State.CLOSED
        self._do("close")
        self._buf.clear()
        if not handshake_done:
            return b""
        return self._frame(Error(0, code, None, message), 2**32 - 1)


class ClientConnection(_Connection[Response, Request]):
    """Client side: ``hello()`` first, then ``send`` requests and read responses."""

    _role = "client"
    _table = _CLIENT_MOVES

    def __init__(self, *, version: int = PROTOCOL_VERSION, max_frame_size: int = 2**32 - 1):
        super().__init__(State.START, Response, max_frame_size)
        self.version = version
        self.server: ServerHello | None = None

    def hello(self) -> bytes:
        self._do("send_hello")
        return CLIENT_HELLO.pack(MAGIC, self.version, 0)

    def next_event(self) -> ServerHello | Response | ConnectionClosed | _NeedData:
        if self.state is State.AWAIT_ACCEPT:
            if len(self._buf) < SERVER_HELLO.size:
                return self._eof_event("the hello") if self._eof else NEED_DATA
            magic, version, status, max_frame, max_in_flight = SERVER_HELLO.unpack_from(self._buf)
            if magic != MAGIC:
                raise self._fail(
                    RemoteProtocolError("bad_magic", f"not a dbpool server: {magic!r}")
                )
            auth = status == HandshakeStatus.AUTH_REQUIRED
            if status != HandshakeStatus.OK and not auth:
                raise self._fail(HandshakeRejected(status, version))
            del self._buf[: SERVER_HELLO.size]
            self._do("recv_auth" if auth else "recv_accept")
            self.server = ServerHello(version, max_frame, max_in_flight, auth)
            return self.server
        if self.state in (State.OPEN, State.AUTH):
            ev = self._next_frame()
            if isinstance(ev, Error) and ev.id == 0:
                self._do("close")  # the server closes after a connection-level error
            return ev
        if self.state is State.CLOSED:
            return ConnectionClosed()
        raise LocalProtocolError(self._role, self.state, "next_event")

    def send(self, msg: Request) -> bytes:
        """Frame a request, mapping parameter values to their wire forms; raises
        `FrameTooLarge` past the server's announced limit (nothing is sent and
        the connection stays usable)."""
        limit = self.server.max_frame_size if self.server else 2**32 - 1
        if isinstance(msg, Query):
            msg = msgspec.structs.replace(msg, params=codec.row_to_wire(msg.params))
        elif isinstance(msg, ExecuteMany):
            seq = tuple([codec.row_to_wire(p) for p in msg.params_seq])
            msg = msgspec.structs.replace(msg, params_seq=seq)
        frame = self._frame(msg, limit)
        self._do("send_frame")
        return frame

    def authenticated(self) -> None:
        """The server answered our `Auth` with `Done`: frames flow."""
        self._do("authenticated")

    def close(self) -> None:
        self._do("close")
