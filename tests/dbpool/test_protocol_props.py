"""Property tests of the frame decoder and the two msgpack implementations."""

from __future__ import annotations

import datetime
import decimal
import itertools
import uuid
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from services.dbpool import codec
from services.dbpool.protocol import (
    NEED_DATA,
    ClientConnection,
    ClientHello,
    ConnectionClosed,
    Limits,
    Ping,
    ProtocolError,
    Query,
    ServerConnection,
    State,
)

from .guestsdk import fabric_dbpool

LIMITS = Limits(max_frame_size=256)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def drain(conn: ServerConnection | ClientConnection, chunks: list[bytes]) -> list[Any]:
    """Feed chunks then EOF; collect events until the connection ends.  Any
    exception other than ProtocolError fails the test; a decoder that stopped
    making progress would loop here forever and be caught by the bound."""
    events: list[Any] = []
    try:
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            for _ in range(len(chunk) + 2):
                ev = conn.next_event()
                if ev is NEED_DATA:
                    break
                events.append(ev)
                if isinstance(ev, ClientHello) and isinstance(conn, ServerConnection):
                    conn.accept()
                if isinstance(ev, ConnectionClosed):
                    return events
            else:
                raise AssertionError("next_event made no progress")
    except ProtocolError:
        assert conn.state in (State.ERROR, State.CLOSED)
        events.append("error")
    return events


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
def test_server_decoder_on_arbitrary_bytes_only_raises_protocol_errors(
    data: bytes, cuts: list[int]
) -> None:
    drain(ServerConnection(LIMITS), chunked(data, cuts))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
def test_decoder_after_handshake_on_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    client = ClientConnection()
    server = ServerConnection(LIMITS)
    server.receive_data(client.hello())
    server.next_event()
    server.accept()
    drain(server, chunked(data, cuts))
    client.receive_data(b"FDBP\x00\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x10")
    drain(client, chunked(data, cuts))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 2**63 - 1), st.text(max_size=40)),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.integers(0, 2000), max_size=10),
    st.binary(max_size=40),
)
def test_valid_frames_in_any_chunking_decode_to_the_same_messages(
    msgs: list[tuple[int, str]], cuts: list[int], garbage: bytes
) -> None:
    client = ClientConnection()
    sent = [Query(i, "main", sql) if n % 2 else Ping(i) for n, (i, sql) in enumerate(msgs)]
    data = client.hello() + b"".join(client.send(m) for m in sent)
    server = ServerConnection(Limits())
    events = drain(server, chunked(data + garbage, cuts))
    assert events[1 : 1 + len(sent)] == sent


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.decimals(allow_nan=False)
    | st.dates()
    | st.times()
    | st.datetimes()
    | st.datetimes(timezones=st.just(datetime.UTC))
    | st.timedeltas()
    | st.uuids()
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


def normalise(v: Any) -> Any:
    """What a value becomes after a wire round trip (big ints become Decimals)."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and not -(2**63) <= v <= 2**64 - 1:
        return decimal.Decimal(v)
    if isinstance(v, list | tuple):
        return [normalise(x) for x in v]
    if isinstance(v, dict):
        return {k: normalise(x) for k, x in v.items()}
    return v


def same(a: Any, b: Any) -> bool:
    if isinstance(a, decimal.Decimal) and isinstance(b, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(values)
def test_guest_and_host_msgpack_agree(value: Any) -> None:
    expected = normalise(value)
    host_wire = msgspec.msgpack.encode(codec.to_wire(value))
    guest_wire = fabric_dbpool.packb(value)
    assert same(fabric_dbpool.unpackb(host_wire), expected)
    assert same(msgspec.msgpack.decode(guest_wire, ext_hook=codec.ext_hook), expected)
    assert same(fabric_dbpool.unpackb(guest_wire), expected)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_guest_unpackb_on_garbage_raises_only_value_errors(data: bytes) -> None:
    try:
        fabric_dbpool.unpackb(data)
    except (ValueError, TypeError, decimal.InvalidOperation, RecursionError):
        pass


def test_uuid_and_strings_are_distinct_on_the_wire() -> None:
    u = uuid.uuid4()
    assert fabric_dbpool.unpackb(msgspec.msgpack.encode(codec.to_wire(u))) == u
    assert fabric_dbpool.unpackb(msgspec.msgpack.encode(str(u))) == str(u)
