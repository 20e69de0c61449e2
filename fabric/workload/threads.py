"""Blocking work (compiling, building guests) off the event loop, in daemon threads.

``asyncio.to_thread`` uses the loop's default executor, whose threads the
interpreter joins at exit: Ctrl-C during a cold start would wait for every
compilation to finish.  A daemon thread is abandoned at exit instead, and the
awaiting task can be cancelled at once (the compile cache is written
atomically, so an abandoned compilation leaves nothing half-written behind).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["in_daemon_thread"]

T = TypeVar("T")


async def in_daemon_thread(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn(*args)`` in a new daemon thread and await its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return  # the awaiting task was cancelled
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = context.run(fn, *args)
        except BaseException as exc:
            outcome: tuple[T | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    threading.Thread(
        target=work, name=f"fabric-{getattr(fn, '__name__', 'work')}", daemon=True
    ).start()
    return await future
