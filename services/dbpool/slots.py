"""Small asyncio primitives for a session's hot path.

`Slots` is a counting semaphore whose uncontended take is a plain method
call (``take_now``), not a coroutine: a session takes an in-flight slot and
a parallel slot for every request, and ``asyncio.Semaphore.acquire`` costs
several Python frames even when a slot is free.  `within` bounds an
awaitable in time with one timer that cancels the task (what
``asyncio.timeout`` does, without its scope object).  `WaitTimer` bounds a
connection's waits of one kind with one timer armed lazily: most waits end
long before it.  Both run the awaitable's first step before any timer is
armed: a wait that completes in it (the bytes are already there, the
writer has room) never needed a timer.
"""

from __future__ import annotations

import asyncio
import types
from collections import deque
from collections.abc import Awaitable, Generator
from typing import Any, TypeVar

__all__ = ["Slots", "WaitTimer", "within"]

T = TypeVar("T")


class Slots:
    """A FIFO counting semaphore: ``take_now()`` or ``await take()``, then ``give()``."""

    __slots__ = ("_waiters", "free")

    def __init__(self, count: int) -> None:
        self.free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take_now(self) -> bool:
        """Take a slot if one is free and nobody waits for one."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        """Take a slot, waiting in FIFO order for one to be given back."""
        if self.take_now():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.give()  # handed a slot just before the cancellation: pass it on
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass  # already passed over by give()
            raise

    def give(self) -> None:
        """Give a slot back: straight to the oldest waiter, if any."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1

    def __repr__(self) -> str:
        return f"<Slots free={self.free} waiting={len(self._waiters)}>"


@types.coroutine
def _rest(it: Generator[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    """Await the rest of an awaitable whose first step ran (``it.send(None)``
    gave ``yielded``): what ``yield from`` does, from a value already yielded."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            it.close()
            raise
        except BaseException as exc:
            try:
                yielded = it.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                yielded = it.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


def _expire(task: asyncio.Task[Any], expired: list[bool]) -> None:
    expired.append(True)
    task.cancel()


async def within(
    aw: Awaitable[T], delay: float, task: asyncio.Task[Any] | None = None
) -> T:
    """Await ``aw``; raise TimeoutError if it takes more than ``delay`` seconds.
    ``task`` is the running task, when the caller knows it.  No timer is armed
    when ``aw`` finishes without waiting."""
    if task is None:
        task = asyncio.current_task()
        assert task is not None
    cancelling = task.cancelling()
    it = aw.__await__()
    try:
        yielded = it.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    expired: list[bool] = []
    timer = asyncio.get_running_loop().call_later(delay, _expire, task, expired)
    try:
        result = await _rest(it, yielded)
    except BaseException as exc:
        if expired and task.uncancel() <= cancelling and isinstance(exc, asyncio.CancelledError):
            raise TimeoutError from None
        raise
    finally:
        timer.cancel()
    if expired:
        task.uncancel()
    return result


class WaitTimer:
    """A connection's waits of one kind (reads of the next command, drains),
    each bounded by ``timeout`` seconds, with one timer per connection rather
    than a timeout scope per wait: the timer is armed by the first wait that
    finds none, and when it fires it re-arms for the wait going on then, or
    cancels it once that wait has lasted ``timeout`` (the wait raises
    TimeoutError and ``expired`` stays true)."""

    __slots__ = ("_since", "_task", "_timer", "expired", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.expired = False
        self._since = 0.0
        self._task: asyncio.Task[Any] | None = None  # set while a wait goes on
        self._timer: asyncio.TimerHandle | None = None

    async def bound(self, aw: Awaitable[T]) -> T:
        it = aw.__await__()
        try:
            yielded = it.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        loop = asyncio.get_running_loop()
        self._since = loop.time()
        if self._timer is None:
            self._timer = loop.call_at(self._since + self.timeout, self._check)
        task = self._task = asyncio.current_task()
        try:
            return await _rest(it, yielded)
        except asyncio.CancelledError:
            if self.expired and task is not None and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._task = None

    def _check(self) -> None:
        self._timer = None
        task = self._task
        if task is None or self.expired:
            return  # nothing waiting: the next wait arms the timer
        loop = asyncio.get_running_loop()
        remaining = self._since + self.timeout - loop.time()
        if remaining > 0:
            self._timer = loop.call_later(remaining, self._check)
            return
        self.expired = True
        task.cancel()

    def cancel(self) -> None:
        """Stop the timer (the connection is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __repr__(self) -> str:
        return f"<WaitTimer timeout={self.timeout} waiting={self._task is not None}>"
