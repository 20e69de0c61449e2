"""The sans-IO protocol core and value mapping, without a loop or a socket."""

from __future__ import annotations

import datetime
import decimal
import struct
import uuid

import msgspec
import pytest

from services.dbpool import codec
from services.dbpool.protocol import (
    NEED_DATA,
    Begin,
    ClientConnection,
    ClientHello,
    Commit,
    ConnectionClosed,
    DatabaseStats,
    Done,
    Error,
    ExecuteMany,
    FrameTooLarge,
    HandshakeRejected,
    HandshakeStatus,
    Limits,
    LocalProtocolError,
    Ping,
    Pong,
    ProtocolError,
    Query,
    RemoteProtocolError,
    Request,
    Response,
    Rollback,
    Rows,
    ServerConnection,
    ServerHello,
    ServerStats,
    State,
    Stats,
    StatsReply,
)

from .guestsdk import fabric_dbpool


def pair(limits: Limits | None = None) -> tuple[ClientConnection, ServerConnection]:
    client, server = ClientConnection(), ServerConnection(limits)
    server.receive_data(client.hello())
    assert server.next_event() == ClientHello(1, 0)
    client.receive_data(server.accept())
    assert isinstance(client.next_event(), ServerHello)
    return client, server


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def test_handshake_bytes_are_the_documented_ones() -> None:
    client, server = ClientConnection(), ServerConnection(Limits(max_frame_size=4096))
    hello = client.hello()
    assert hello == b"FDBP\x00\x01\x00\x00"
    server.receive_data(hello)
    assert server.next_event() == ClientHello(version=1, flags=0)
    reply = server.accept()
    assert reply == b"FDBP\x00\x01\x00\x00" + struct.pack(">II", 4096, 16)
    client.receive_data(reply)
    assert client.next_event() == ServerHello(version=1, max_frame_size=4096, max_in_flight=16)
    assert client.state is State.OPEN and server.state is State.OPEN


def test_unsupported_version_is_refused_with_the_server_version() -> None:
    client, server = ClientConnection(version=9), ServerConnection()
    server.receive_data(client.hello())
    assert server.next_event() == ClientHello(9, 0)
    assert not server.version_supported
    reply = server.accept()
    assert reply[:8] == b"FDBP\x00\x01\x00\x01"
    assert server.state is State.CLOSED
    client.receive_data(reply)
    with pytest.raises(HandshakeRejected) as info:
        client.next_event()
    assert info.value.code == "unsupported_version"
    assert info.value.server_version == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [(HandshakeStatus.TOO_MANY_CLIENTS, "too_many_clients"), (3, "server_closing")],
)
def test_refusals_carry_their_code(status: HandshakeStatus, code: str) -> None:
    client, server = ClientConnection(), ServerConnection()
    server.receive_data(client.hello())
    server.next_event()
    client.receive_data(server.reject(HandshakeStatus(status)))
    with pytest.raises(HandshakeRejected, match=code):
        client.next_event()


def test_bad_magic_is_a_remote_error_and_gets_no_reply() -> None:
    server = ServerConnection()
    server.receive_data(b"GET / HTTP/1.1\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code == "bad_magic"
    assert server.close(info.value.code, "x") == b""


def test_every_message_round_trips() -> None:
    client, server = pair()
    requests: list[Request] = [
        Query(1, "main", "SELECT $1", (1, "a", None, b"\x00", 1.5, True, [1, 2], {"k": "v"})),
        ExecuteMany(2, "main", "INSERT INTO t VALUES (%s)", ((1,), (2,))),
        Begin(3, "main"),
        Commit(4),
        Rollback(5),
        Ping(6),
        Stats(7),
    ]
    for req in requests:
        server.receive_data(client.send(req))
        assert server.next_event() == req
    assert server.next_event() is NEED_DATA
    stats = ServerStats(
        clients_connected=1,
        clients_total=2,
        clients_rejected=0,
        requests_in_flight=0,
        transactions_open=0,
        transactions_abandoned=0,
        requests={"query": 1},
        errors={},
        databases={"main": DatabaseStats(kind="postgres", size=1)},
    )
    responses: list[Response] = [
        Rows(1, ["a", "b"], [(1, "x"), (2, None)], 2),
        Done(2, 2),
        Pong(6),
        StatsReply(7, stats),
        Error(8, "database_error", "42P01", 'relation "nope" does not exist'),
    ]
    for resp in responses:
        client.receive_data(server.send(resp))
        assert client.next_event() == resp


def test_a_frame_split_byte_by_byte_decodes_once() -> None:
    client, server = pair()
    data = client.send(Query(1, "main", "SELECT 1")) + client.send(Ping(2))
    events = []
    for i in range(len(data)):
        server.receive_data(data[i : i + 1])
        while (ev := server.next_event()) is not NEED_DATA:
            events.append(ev)
    assert events == [Query(1, "main", "SELECT 1"), Ping(2)]


def test_frames_on_the_wire_are_msgpack_maps_tagged_t() -> None:
    client, _ = pair()
    data = client.send(Begin(5, "main"))
    (size,) = struct.unpack(">I", data[:4])
    assert size == len(data) - 4
    assert msgspec.msgpack.decode(data[4:]) == {"t": "begin", "id": 5, "db": "main"}


def test_oversized_frame_is_refused_from_its_header() -> None:
    _, server = pair(Limits(max_frame_size=100))
    server.receive_data(struct.pack(">I", 101))  # the body never needs to arrive
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code == "frame_too_large"
    assert server.state is State.ERROR
    final = server.close(info.value.code, info.value.message)
    assert msgspec.msgpack.decode(final[4:])["code"] == "frame_too_large"
    assert server.state.name == "CLOSED"


@pytest.mark.parametrize(
    "body",
    [
        b"",  # empty frame
        b"\xc1",  # never-used msgpack byte
        msgspec.msgpack.encode({"t": "nope", "id": 1}),  # unknown tag
        msgspec.msgpack.encode({"t": "query", "id": 1, "db": "main"}),  # missing sql
        msgspec.msgpack.encode({"t": "ping", "id": 0}),  # id 0 is reserved
        msgspec.msgpack.encode({"t": "ping", "id": -1}),
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode({"t": "ping", "id": 1}) + b"\x00",  # trailing byte
        b"\x91" * 100_000,  # deep nesting
        msgspec.msgpack.encode(
            {"t": "query", "id": 1, "db": "m", "sql": "", "params": [msgspec.msgpack.Ext(99, b"")]}
        ),
        msgspec.msgpack.encode(
            {"t": "query", "id": 1, "db": "m", "sql": "", "params": [msgspec.msgpack.Ext(2, b"x")]}
        ),
    ],
)
def test_malformed_frames_are_protocol_errors(body: bytes) -> None:
    _, server = pair()
    server.receive_data(frame(body))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code == "protocol_error"
    final = server.close(info.value.code, info.value.message)
    err = msgspec.msgpack.decode(final[4:], type=Error)
    assert (err.id, err.code) == (0, "protocol_error")


def test_eof_between_frames_is_a_clean_close_and_mid_frame_an_error() -> None:
    client, server = pair()
    server.receive_data(client.send(Ping(1)))
    server.receive_data(b"")
    assert server.next_event() == Ping(1)
    assert isinstance(server.next_event(), ConnectionClosed)
    assert server.state is State.CLOSED

    client, server = pair()
    server.receive_data(client.send(Ping(1))[:-1])
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        server.next_event()


def test_connection_level_error_closes_the_client_side() -> None:
    client, server = pair()
    client.receive_data(server.close("idle_timeout", "bye"))
    ev = client.next_event()
    assert ev == Error(0, "idle_timeout", None, "bye")
    assert client.state is State.CLOSED


def test_misuse_raises_local_protocol_error_naming_role_state_event() -> None:
    server = ServerConnection()
    with pytest.raises(LocalProtocolError) as info:
        server.send(Pong(1))
    assert (info.value.role, info.value.state, info.value.event) == (
        "server",
        State.AWAIT_HELLO,
        "send_frame",
    )
    client = ClientConnection()
    with pytest.raises(LocalProtocolError):
        client.send(Ping(1))
    client.hello()
    client.send(Ping(1))  # pipelining behind the hello is allowed
    with pytest.raises(LocalProtocolError):
        client.hello()


def test_client_refuses_to_send_past_the_announced_limit_and_stays_usable() -> None:
    client, server = pair(Limits(max_frame_size=200))
    with pytest.raises(FrameTooLarge):
        client.send(Query(1, "main", "x" * 500))
    assert client.state is State.OPEN
    server.receive_data(client.send(Ping(2)))
    assert server.next_event() == Ping(2)


def test_server_refuses_to_send_a_result_past_max_result_size() -> None:
    _, server = pair(Limits(max_result_size=1000))
    with pytest.raises(FrameTooLarge) as info:
        server.send(Rows(1, ["a"], [("x" * 2000,)], 1))
    assert info.value.code == "frame_too_large"
    assert server.state is State.OPEN


def test_protocol_errors_share_one_base() -> None:
    for cls in (RemoteProtocolError, LocalProtocolError, FrameTooLarge, HandshakeRejected):
        assert issubclass(cls, ProtocolError)


# ------------------------------------------------------------------- type mapping

TZ = datetime.timezone(datetime.timedelta(hours=-3, minutes=-30))
VALUES = [
    decimal.Decimal("12345678901234567890.000001"),
    decimal.Decimal("-Infinity"),
    decimal.Decimal("-0.00"),
    datetime.date(1, 1, 1),
    datetime.date(9999, 12, 31),
    datetime.time(23, 59, 59, 999999),
    datetime.time(1, 2, 3, tzinfo=TZ),
    datetime.datetime(2024, 2, 29, 12, 0, 0, 1),
    datetime.datetime(2024, 2, 29, 12, 0, tzinfo=datetime.UTC),
    datetime.datetime(2024, 2, 29, 12, 0, tzinfo=TZ),
    datetime.timedelta(days=-999_999_999),
    datetime.timedelta(days=999_999_999, seconds=86399, microseconds=999999),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    [decimal.Decimal("1.5"), [datetime.date(2020, 1, 1)]],
    {"nested": uuid.UUID(int=0)},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_typed_values_round_trip_between_host_and_guest(value: object) -> None:
    wire = msgspec.msgpack.encode(codec.to_wire(value))
    assert fabric_dbpool.unpackb(wire) == value
    assert msgspec.msgpack.decode(fabric_dbpool.packb(value), ext_hook=codec.ext_hook) == value
    assert msgspec.msgpack.decode(wire, ext_hook=codec.ext_hook) == value


def test_ext_codes_are_the_documented_ones() -> None:
    def ext(v: object) -> tuple[int, bytes]:
        e = msgspec.msgpack.decode(msgspec.msgpack.encode(codec.to_wire(v)))
        assert isinstance(e, msgspec.msgpack.Ext)
        return e.code, bytes(e.data)

    assert ext(decimal.Decimal("1.50")) == (1, b"1.50")
    assert ext(datetime.date(2024, 1, 2)) == (2, b"2024-01-02")
    assert ext(datetime.time(1, 2, 3)) == (3, b"01:02:03")
    assert ext(datetime.datetime(2024, 1, 2, 3, 4, 5)) == (4, b"2024-01-02T03:04:05")
    assert ext(datetime.timedelta(days=-1, seconds=5)) == (5, struct.pack(">iii", -1, 5, 0))
    assert ext(uuid.UUID(int=1)) == (6, uuid.UUID(int=1).bytes)
    assert ext(2**64) == (1, b"18446744073709551616")


def test_unmapped_values_travel_as_text() -> None:
    import ipaddress

    assert codec.to_wire(ipaddress.ip_address("10.0.0.1")) == "10.0.0.1"
    assert codec.to_wire(bytearray(b"ab")) == b"ab"
    assert codec.to_wire({1, 2}) in ([1, 2], [2, 1])


def test_rows_are_mapped_when_the_server_sends_them() -> None:
    client, server = pair()
    d = decimal.Decimal("9.99")
    client.receive_data(server.send(Rows(1, ["price", "day"], [(d, datetime.date(2024, 5, 1))], 1)))
    assert client.next_event() == Rows(1, ["price", "day"], [(d, datetime.date(2024, 5, 1))], 1)


@pytest.mark.parametrize("flags", [1, 0x8000, 0xFFFF])
def test_a_hello_with_flags_is_refused(flags: int) -> None:
    server = ServerConnection()
    server.receive_data(b"FDBP\x00\x01" + struct.pack(">H", flags))
    assert server.next_event() == ClientHello(1, flags)
    reply = server.accept()
    assert reply == b"FDBP\x00\x01\x00\x05" + bytes(8)  # status 5: unsupported_flags
    assert server.state is State.CLOSED
    client = ClientConnection()
    client.hello()
    client.receive_data(reply)
    with pytest.raises(HandshakeRejected) as info:
        client.next_event()
    assert info.value.code == "unsupported_flags"
    assert str(info.value).endswith("server refused the handshake (unsupported_flags, server v1)")
