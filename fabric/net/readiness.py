"""Readiness: the only asyncio-aware piece under the sans-IO objects.

Every object a WASI pollable can be made from (sockets, stream ends,
datagram streams, name lookups) answers two questions:

- `ready() -> bool`, synchronously, with no loop involved;
- `await wait_ready()`, which returns once `ready()` is true.

State changes call `Notifier.notify()`, a plain synchronous call that
resolves the futures of whoever is waiting. Wake-ups may be spurious, so the
waiting side loops on its predicate (`wait_until`). A notifier allocates
nothing while nobody waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

__all__ = ["Notifier", "Pollable", "wait_until"]


class Pollable(Protocol):
    """What a `wasi:io/poll.pollable` needs from its source."""

    def ready(self) -> bool: ...

    async def wait_ready(self) -> None: ...


class Notifier:
    """A set of waiters woken together by `notify()`.

    A waiter that finished otherwise (cancelled, or resolved by another
    notifier it watched) is no longer counted, and is dropped at the next
    `notify()` or the next waiter added: no callback per waiter to take it
    out, so the list holds at most the live waiters and the finished ones
    since the last change."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        """The waiters still waiting."""
        return sum(1 for fut in self._waiters if not fut.done())

    def future(self) -> asyncio.Future[None]:
        """A future resolved by the next `notify()` (needs a running loop)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.watch(fut)
        return fut

    def watch(self, fut: asyncio.Future[None]) -> None:
        """Resolve ``fut`` (if not done) at the next `notify()`; one future may
        watch several notifiers."""
        waiters = self._waiters
        if waiters:
            waiters = self._waiters = [w for w in waiters if not w.done()]
        waiters.append(fut)

    def notify(self) -> None:
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait(self) -> None:
        await self.future()


async def wait_until(predicate: Callable[[], bool], *notifiers: Notifier) -> None:
    """Wait until `predicate()` is true, re-checking after every notification."""
    while not predicate():
        if len(notifiers) == 1:
            await notifiers[0].future()
            continue
        futures = [n.future() for n in notifiers]
        try:
            await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in futures:
                if not fut.done():
                    fut.cancel()
