"""Sans-IO: RowsBuilder (streamed results) and the auth handshake states."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import uuid

import pytest

from pools import ResultTooLarge
from services.dbpool.auth import METHOD, proof
from services.dbpool.protocol import (
    NEED_DATA,
    Auth,
    Challenge,
    ClientConnection,
    Done,
    Limits,
    LocalProtocolError,
    Ping,
    Rows,
    ServerConnection,
    ServerHello,
    State,
)
from services.dbpool.results import (
    MAX_CHUNK_ROWS,
    SMALL_REPLY,
    Reply,
    ReplyBuffer,
    RowsBuilder,
    UnencodableResult,
)


def open_pair(limits: Limits | None = None) -> tuple[ServerConnection, ClientConnection]:
    server, client = ServerConnection(limits), ClientConnection()
    server.receive_data(client.hello())
    server.next_event()
    client.receive_data(server.accept())
    assert isinstance(client.next_event(), ServerHello)
    return server, client


ROWS = [
    (1, "one", None, decimal.Decimal("1.50"), datetime.date(2024, 1, 2)),
    (2, "two" * 10, b"\x00\x01", decimal.Decimal("-3"), datetime.date(1999, 12, 31)),
    (3, "", True, 2.5, uuid.UUID(int=7)),
]


@pytest.mark.parametrize("n", [0, 1, 15, 16, 70_000])
def test_streamed_rows_decode_exactly_like_a_built_rows_message(n: int) -> None:
    rows = [ROWS[i % 3] for i in range(n)]
    server, client = open_pair()
    builder = RowsBuilder(9, max_rows=10**6, max_bytes=2**31)
    for i in range(0, n, 1000):
        builder.add(rows[i : i + 1000])
    client.receive_data(bytes(server.send_encoded(builder.message(["a", "b", "c", "d", "e"], n))))
    streamed = client.next_event()
    expected_server, expected_client = open_pair()
    expected_client.receive_data(expected_server.send(Rows(9, list("abcde"), rows, n)))
    assert streamed == expected_client.next_event()
    assert isinstance(streamed, Rows) and len(streamed.rows) == n


def test_limits_are_checked_per_chunk_before_keeping_it() -> None:
    builder = RowsBuilder(1, max_rows=5, max_bytes=10_000)
    builder.add([(1,)] * 5)
    with pytest.raises(ResultTooLarge) as info:
        builder.add([(1,)])
    assert info.value.rows == 6 and "max_result_rows" in str(info.value)
    sized = RowsBuilder(1, max_rows=10**6, max_bytes=1000)
    sized.add([("x" * 100,)] * 9)
    held = sized.size
    with pytest.raises(ResultTooLarge) as info:
        sized.add([("x" * 100,)])
    assert "max_result_size" in str(info.value)
    assert sized.size == held, "the refused chunk is not kept"

    class Opaque:
        def __str__(self) -> str:
            raise RuntimeError("no text form")

    with pytest.raises(UnencodableResult):
        RowsBuilder(1, max_rows=10, max_bytes=10_000).add([(Opaque(),)])


def test_next_chunk_aims_at_a_fixed_byte_size() -> None:
    narrow = RowsBuilder(1, max_rows=10**6, max_bytes=2**31)
    assert narrow.next_chunk() == MAX_CHUNK_ROWS
    narrow.add([(1,)] * 100)
    assert narrow.next_chunk() == MAX_CHUNK_ROWS
    wide = RowsBuilder(1, max_rows=10**6, max_bytes=2**31)
    wide.add([("x" * 100_000,)] * 4)
    assert wide.next_chunk() == 2  # ~256 KiB of 100 KB rows


def test_auth_handshake_states() -> None:
    server, client = ServerConnection(), ClientConnection()
    server.receive_data(client.hello())
    server.next_event()
    hello = server.accept(auth_required=True)
    assert server.state is State.AUTH
    challenge = Challenge(0, METHOD, b"n" * 32)
    client.receive_data(hello + server.send(challenge))
    ev = client.next_event()
    assert isinstance(ev, ServerHello) and ev.auth_required and client.state is State.AUTH
    assert client.next_event() == challenge
    server.receive_data(client.send(Auth(1, METHOD, proof(b"s", b"n" * 32))))
    assert isinstance(server.next_event(), Auth)
    server.authenticated()
    client.receive_data(server.send(Done(1)))
    assert client.next_event() == Done(1)
    client.authenticated()
    assert (server.state, client.state) == (State.OPEN, State.OPEN)
    server.receive_data(client.send(Ping(2)))
    assert server.next_event() == Ping(2)
    assert server.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError):
        server.authenticated()  # only from AUTH


async def test_one_large_result_at_a_time_per_connection() -> None:
    peaks: list[int] = []
    buf = ReplyBuffer(peaks.append)
    first, second = Reply(), Reply()
    await buf.grow(first, 1000, 1000)
    await buf.grow(second, 1000, 1000)  # small results need no turn
    await buf.grow(first, SMALL_REPLY, SMALL_REPLY + 1000)
    assert first.turn
    waiting = asyncio.ensure_future(buf.grow(second, SMALL_REPLY, SMALL_REPLY + 1000))
    await asyncio.sleep(0)
    assert not waiting.done() and not second.turn, "the second large result waits"
    assert buf.bytes == 2 * SMALL_REPLY + 2000
    buf.release(first)  # the first reply was written
    await waiting
    assert second.turn and buf.bytes == SMALL_REPLY + 1000
    buf.release(second)
    assert buf.bytes == 0 and buf.peak == max(peaks) == 2 * SMALL_REPLY + 2000
