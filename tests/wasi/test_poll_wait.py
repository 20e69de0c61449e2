"""``wasi:io/poll`` waiting on several sources: who wakes it, and what it leaves behind.

A guest's ``poll`` over sockets and a clock (wasi-libc's ``poll`` with a
timeout, Python's ``selectors``) waits on one future that every source
resolves at its next change; a source that cannot say so gets a task.
"""

from __future__ import annotations

import asyncio
import time

from fabric.net.pipe import pipe_pair
from fabric.wasi.io import Pollable, poll, poll_now


def _readable(end) -> Pollable:  # type: ignore[no-untyped-def]
    return Pollable(end.readable, end.wait_readable, watch=end.watch_readable)


def _clock(seconds: float) -> Pollable:
    deadline = time.monotonic_ns() + int(seconds * 1e9)
    return Pollable(
        lambda: time.monotonic_ns() >= deadline,
        lambda: asyncio.sleep(max(deadline - time.monotonic_ns(), 0) / 1e9),
        deadline_ns=deadline,
    )


async def test_poll_answers_at_once_when_a_source_is_ready() -> None:
    a, b = pipe_pair()
    _, d = pipe_pair()
    a.write(b"x")
    assert poll_now([_readable(d), _readable(b)]) == [1]


async def test_poll_wakes_on_the_source_that_changes_and_leaves_no_waiter() -> None:
    _a, b = pipe_pair()
    c, d = pipe_pair()
    task = asyncio.ensure_future(poll([_readable(b), _readable(d), _clock(30)]))
    await asyncio.sleep(0.01)
    assert not task.done()
    c.write(b"y")
    assert await asyncio.wait_for(task, 5) == [1]
    # the one future it waited on left every source it watched
    assert len(b._in.readers) == 0 and len(d._in.readers) == 0


async def test_poll_times_out_on_its_clock_and_leaves_no_waiter() -> None:
    _a, b = pipe_pair()
    _c, d = pipe_pair()
    started = time.monotonic()
    assert await asyncio.wait_for(poll([_readable(b), _clock(0.05), _readable(d)]), 5) == [1]
    assert time.monotonic() - started >= 0.04
    assert len(b._in.readers) == 0 and len(d._in.readers) == 0


async def test_poll_mixes_watched_sources_with_ones_that_only_wait() -> None:
    _a, b = pipe_pair()
    event = asyncio.Event()
    plain = Pollable(event.is_set, event.wait)  # no watch: a task waits on it
    task = asyncio.ensure_future(poll([_readable(b), plain]))
    await asyncio.sleep(0.01)
    event.set()
    assert await asyncio.wait_for(task, 5) == [1]
    assert len(b._in.readers) == 0


async def test_a_cancelled_poll_leaves_no_waiter() -> None:
    _a, b = pipe_pair()
    _c, d = pipe_pair()
    task = asyncio.ensure_future(poll([_readable(b), _readable(d)]))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(b._in.readers) == 0 and len(d._in.readers) == 0
