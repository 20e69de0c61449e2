"""Pipe pairs: backpressure, half-close, EOF, reset, bounded memory."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fabric.net import ErrorCode, NetTrap, PipeEnd, SocketError, StreamClosed, pipe_pair


def test_backpressure_and_check_write_permit() -> None:
    a, b = pipe_pair(high_water=10)
    assert a.check_write() == 10 and a.writable()
    a.write(b"123456")
    assert a.check_write() == 4
    with pytest.raises(NetTrap):
        a.write(b"12345")
    a.write(b"7890")
    assert a.check_write() == 0 and not a.writable()
    assert b.read(3) == b"123"
    assert a.check_write() == 3 and a.writable()
    assert b.read(100) == b"4567890"
    assert b.read(100) == b"" and not b.readable()


def test_reads_keep_byte_order_across_chunk_boundaries() -> None:
    a, b = pipe_pair()
    for chunk in (b"ab", b"cde", b"f", b"ghij"):
        a.write(chunk)
    assert [b.read(3), b.read(1), b.read(4), b.read(9)] == [b"abc", b"d", b"efgh", b"ij"]
    assert b.read(0) == b""


def test_eof_only_after_buffered_bytes() -> None:
    a, b = pipe_pair()
    a.write(b"last words")
    a.shutdown_send()
    a.shutdown_send()  # idempotent
    assert b.readable()
    assert b.read(4) == b"last"
    assert b.read(100) == b" words"
    assert b.at_eof
    with pytest.raises(StreamClosed):
        b.read(1)
    with pytest.raises(StreamClosed):
        b.read(0)  # closed stays closed
    with pytest.raises(StreamClosed):
        a.check_write()
    b.write(b"the other way still works")
    assert a.read(100) == b"the other way still works"


def test_graceful_close_delivers_data_then_eof() -> None:
    a, b = pipe_pair()
    a.write(b"bye")
    a.close()
    assert b.read(10) == b"bye"
    with pytest.raises(StreamClosed):
        b.read(10)


def test_close_with_unread_data_resets_the_peer() -> None:
    a, b = pipe_pair()
    b.write(b"unread by a")
    a.write(b"delivered")
    a.close()  # discards unread inbound bytes: the kernel sends RST
    assert b.read(100) == b"delivered"
    with pytest.raises(SocketError) as info:
        b.read(100)
    assert info.value.code is ErrorCode.CONNECTION_RESET
    with pytest.raises(StreamClosed):
        b.read(100)


def test_abort_resets_and_writer_to_a_gone_peer_gets_reset_then_closed() -> None:
    a, b = pipe_pair()
    a.abort()
    assert b.readable() and b.writable()
    with pytest.raises(SocketError) as info:
        b.read(1)
    assert info.value.code is ErrorCode.CONNECTION_RESET
    with pytest.raises(SocketError) as info:
        b.check_write()
    assert info.value.code is ErrorCode.CONNECTION_RESET
    with pytest.raises(StreamClosed):
        b.write(b"x")
    assert b.peer_closed


def test_shutdown_receive_discards_now_and_later() -> None:
    a, b = pipe_pair(high_water=8)
    a.write(b"12345678")
    b.shutdown_receive()
    with pytest.raises(StreamClosed):
        b.read(1)
    assert a.check_write() == 8
    for _ in range(100):  # never blocks: the bytes go nowhere
        a.write(b"12345678")
    assert b.inbound_buffered == 0


def test_feed_ignores_the_high_water_mark() -> None:
    a, b = pipe_pair(high_water=4)
    a.feed(b"0123456789")
    assert a.check_write() == 0 and a.outbound_buffered == 10
    assert b.read(100) == b"0123456789"


def test_statistics_and_repr() -> None:
    a, b = pipe_pair(high_water=100)
    a.write(b"x" * 30)
    b.read(10)
    stats = a.statistics()
    assert (stats.bytes_sent, stats.outbound_buffered, stats.high_water) == (30, 20, 100)
    assert b.statistics().bytes_received == 10
    assert "out=20" in repr(a) and "received=10" in repr(b)
    with pytest.raises(ValueError):
        pipe_pair(0)


async def test_waiters_wake_on_data_eof_reset_and_room() -> None:
    a, b = pipe_pair(high_water=4)
    waiter = asyncio.create_task(b.wait_readable())
    await asyncio.sleep(0)
    assert not waiter.done()
    a.write(b"1")
    await asyncio.wait_for(waiter, 5)
    b.read(10)

    waiter = asyncio.create_task(b.wait_readable())
    await asyncio.sleep(0)
    a.shutdown_send()
    await asyncio.wait_for(waiter, 5)

    b.write(b"1234")
    blocked = asyncio.create_task(b.wait_writable())
    await asyncio.sleep(0)
    assert not blocked.done()
    a.read(1)
    await asyncio.wait_for(blocked, 5)

    b.write(b"5")
    blocked = asyncio.create_task(b.wait_writable())
    await asyncio.sleep(0)
    a.abort()  # a gone peer makes the writer ready (to fail)
    await asyncio.wait_for(blocked, 5)


async def test_cancelled_waiters_are_forgotten() -> None:
    a, b = pipe_pair()
    task = asyncio.create_task(b.wait_readable())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(b._in.readers) == 0
    a.write(b"ok")


async def test_fast_writer_slow_reader_memory_stays_bounded() -> None:
    high_water = 64 * 1024
    a, b = pipe_pair(high_water)
    payload = bytes(range(256)) * 4096  # 1 MiB
    total = 8 * len(payload)
    peak = 0

    async def writer() -> None:
        nonlocal peak
        for _ in range(8):
            view = memoryview(payload)
            while view:
                await a.wait_writable()
                n = min(a.check_write(), len(view), 100_000)
                a.write(view[:n])
                view = view[n:]
                peak = max(peak, a.outbound_buffered)
        a.shutdown_send()

    async def reader() -> str:
        digest = hashlib.sha256()
        got = 0
        while True:
            await b.wait_readable()
            try:
                data = b.read(4096)  # small reads: the slow side
            except StreamClosed:
                break
            got += len(data)
            digest.update(data)
            if got % (256 * 1024) < 4096:
                await asyncio.sleep(0)
        assert got == total
        return digest.hexdigest()

    _, digest = await asyncio.wait_for(asyncio.gather(writer(), reader()), 60)
    assert peak <= high_water
    assert digest == hashlib.sha256(payload * 8).hexdigest()


class PipeMachine(RuleBasedStateMachine):
    """Random writes, reads and a shutdown never break the buffer invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.high_water = 64
        self.a: PipeEnd
        self.b: PipeEnd
        self.a, self.b = pipe_pair(self.high_water)
        self.sent = bytearray()
        self.received = bytearray()
        self.shut = False
        self.eof_seen = False

    @precondition(lambda self: not self.shut)
    @rule(data=st.binary(max_size=80))
    def write(self, data: bytes) -> None:
        room = self.a.check_write()
        if len(data) > room:
            with pytest.raises(NetTrap):
                self.a.write(data)
            data = data[:room]
        self.a.write(data)
        self.sent += data

    @precondition(lambda self: not self.eof_seen)
    @rule(n=st.integers(min_value=0, max_value=100))
    def read(self, n: int) -> None:
        try:
            data = self.b.read(n)
        except StreamClosed:
            assert self.shut and self.received == self.sent
            self.eof_seen = True
            return
        assert len(data) <= max(n, 0)
        if n > 0 and not data:
            assert self.b.inbound_buffered == 0
        self.received += data

    @rule()
    def shutdown(self) -> None:
        self.a.shutdown_send()
        self.shut = True

    @invariant()
    def bounded_and_ordered(self) -> None:
        assert 0 <= self.a.outbound_buffered <= self.high_water
        assert self.a.outbound_buffered == len(self.sent) - len(self.received)
        assert self.sent.startswith(self.received)
        assert self.a.writable() == (self.shut or self.a.outbound_buffered < self.high_water)
        assert self.b.readable() == (self.shut or self.b.inbound_buffered > 0)


TestPipeMachine = PipeMachine.TestCase
TestPipeMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
