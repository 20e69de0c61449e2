"""Per-component admission: a concurrency limit with a bounded wait queue.

``AdmissionCore`` is the sans-IO state: ``arrive()`` answers RUN (a slot is
free), WAIT (queued, with a ticket) or REJECT (limit and queue both full);
``finish()`` frees a slot and hands it straight to the oldest waiter;
``abandon(ticket)`` drops a waiter that gave up.  ``Admission`` wraps it for
asyncio: ``async with admission.slot(): ...`` runs the body in a slot, waits in
FIFO order when all slots are busy, and raises ``Overloaded`` at once when the
queue is full, so an overload is an error, never a hang (``enter_now`` /
``enter`` and ``leave`` are the same without a context manager, for the
invocation path).  It also counts
invocations, errors and rejections, keeps latency samples for p50/p99 and
counts every latency into the buckets of a histogram (``LATENCY_BOUNDS``).
For shutdown, ``close()`` refuses new invocations (``ShuttingDown``) and
``wait_idle()`` returns once the admitted and queued ones are done.

Cancellation: a waiter cancelled before its turn leaves the queue; a waiter
cancelled just after being granted a slot passes the slot on.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from .errors import Overloaded, ShuttingDown
from .status import LATENCY_BOUNDS, ComponentStatus, Histogram, LatencySummary

__all__ = ["Admission", "AdmissionCore", "Decision", "summarize"]


class Decision(enum.Enum):
    RUN = "run"
    WAIT = "wait"
    REJECT = "reject"


class AdmissionCore:
    """Counts slots and queues tickets; no clock, no loop."""

    def __init__(self, name: str, limit: int, queue: int) -> None:
        if limit < 1 or queue < 0:
            raise ValueError(f"{name}: need limit >= 1 and queue >= 0, got {limit}, {queue}")
        self.name = name
        self.limit = limit
        self.queue = queue
        self.running = 0
        self.waiting: deque[int] = deque()
        self._next_ticket = 0

    def arrive(self) -> tuple[Decision, int]:
        """A new invocation: run now, wait with the returned ticket, or be rejected."""
        ticket = self._next_ticket
        self._next_ticket += 1
        if self.running < self.limit and not self.waiting:
            self.running += 1
            return Decision.RUN, ticket
        if len(self.waiting) < self.queue:
            self.waiting.append(ticket)
            return Decision.WAIT, ticket
        return Decision.REJECT, ticket

    def finish(self) -> int | None:
        """A running invocation ended; returns the ticket that now holds its slot, if any."""
        if self.running <= 0:
            raise RuntimeError(f"{self.name}: finish() without a running invocation")
        if self.waiting:
            return self.waiting.popleft()  # the slot passes on; running stays the same
        self.running -= 1
        return None

    def abandon(self, ticket: int) -> bool:
        """A waiter gave up before its turn; True if it was still queued."""
        try:
            self.waiting.remove(ticket)
        except ValueError:
            return False
        return True

    def overloaded(self) -> Overloaded:
        return Overloaded(self.name, self.limit, self.queue, self.running, len(self.waiting))

    def __repr__(self) -> str:
        return (
            f"<AdmissionCore {self.name!r} running={self.running}/{self.limit} "
            f"waiting={len(self.waiting)}/{self.queue}>"
        )


def summarize(samples: deque[float] | list[float]) -> LatencySummary:
    """Nearest-rank p50/p99 and max of ``samples``."""
    if not samples:
        return LatencySummary()
    ordered = sorted(samples)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, int(q * n + 0.999999) - 1))]

    return LatencySummary(count=n, p50=rank(0.50), p99=rank(0.99), max=ordered[-1])


class Admission:
    """asyncio wrapper around ``AdmissionCore`` with counters and latency samples."""

    def __init__(
        self,
        name: str,
        limit: int,
        queue: int,
        *,
        clock: Callable[[], float] = time.perf_counter,
        samples: int = 1024,
    ) -> None:
        self.core = AdmissionCore(name, limit, queue)
        self._clock = clock
        self._granted: dict[int, asyncio.Future[None]] = {}
        self.invocations = 0
        self.errors = 0
        self.rejected = 0
        self._latency: deque[float] = deque(maxlen=samples)
        self._wait: deque[float] = deque(maxlen=samples)
        self._buckets = [0] * (len(LATENCY_BOUNDS) + 1)  # every latency since start
        self._latency_sum = 0.0
        self.closed = False
        #: wait_idle() callers, woken when nothing runs any more (no Event to
        #: clear and set around every invocation)
        self._idle_waiters: list[asyncio.Future[None]] = []

    @property
    def name(self) -> str:
        return self.core.name

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the component's slots for the body; ``Overloaded`` if none can come."""
        arrived = self.enter_now()
        if arrived is None:
            arrived = await self.enter()
        try:
            yield
        except BaseException:
            self.leave(arrived, failed=True)
            raise
        self.leave(arrived, failed=False)

    def enter_now(self) -> float | None:
        """Take a free slot without waiting: the arrival time to hand to `leave`,
        or None when none is free (then ``await enter()``, which queues or refuses)."""
        core = self.core
        if self.closed or core.running >= core.limit or core.waiting:
            return None
        arrived = self._clock()
        core.arrive()
        self._wait.append(self._clock() - arrived)
        return arrived

    async def enter(self) -> float:
        """Take a slot, waiting in FIFO order when all are busy: the arrival time
        to hand to `leave`.  Raises ``ShuttingDown`` or ``Overloaded``."""
        if self.closed:
            raise ShuttingDown(f"component {self.core.name!r} takes no new invocations")
        arrived = self._clock()
        decision, ticket = self.core.arrive()
        if decision is Decision.REJECT:
            self.rejected += 1
            raise self.core.overloaded()
        if decision is Decision.WAIT:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._granted[ticket] = waiter
            try:
                await waiter
            except asyncio.CancelledError:
                if not self.core.abandon(ticket) and waiter.done() and not waiter.cancelled():
                    self._release()  # granted just before the cancellation: pass it on
                raise
            finally:
                self._granted.pop(ticket, None)
        self._wait.append(self._clock() - arrived)
        return arrived

    def leave(self, arrived: float, *, failed: bool) -> None:
        """The invocation admitted at ``arrived`` ended (``failed``: with an exception)."""
        if failed:
            self.errors += 1
        self.invocations += 1
        elapsed = self._clock() - arrived
        self._latency.append(elapsed)
        self._buckets[bisect.bisect_left(LATENCY_BOUNDS, elapsed)] += 1
        self._latency_sum += elapsed
        self._release()

    def close(self) -> None:
        """Refuse new invocations with ``ShuttingDown``; admitted and queued ones go on."""
        self.closed = True

    async def wait_idle(self) -> None:
        """Return once nothing runs or waits (bound it with ``asyncio.timeout`` for a grace)."""
        if self.core.running == 0:
            return
        idle: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(idle)
        await idle

    def _release(self) -> None:
        while True:
            ticket = self.core.finish()
            if ticket is None:
                if self.core.running == 0 and self._idle_waiters:
                    waiters, self._idle_waiters = self._idle_waiters, []
                    for idle in waiters:
                        if not idle.done():
                            idle.set_result(None)
                return
            waiter = self._granted.get(ticket)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
                return
            # that waiter was cancelled meanwhile: its slot passes on to the next one

    def statistics(self) -> ComponentStatus:
        return ComponentStatus(
            name=self.core.name,
            concurrency=self.core.limit,
            queue=self.core.queue,
            in_flight=self.core.running,
            waiting=len(self.core.waiting),
            invocations=self.invocations,
            errors=self.errors,
            rejected=self.rejected,
            latency=summarize(self._latency),
            wait=summarize(self._wait),
            histogram=Histogram(
                bounds=LATENCY_BOUNDS, counts=tuple(self._buckets), sum=self._latency_sum
            ),
        )

    def __repr__(self) -> str:
        return (
            f"<Admission {self.core.name!r} in_flight={self.core.running}/{self.core.limit} "
            f"waiting={len(self.core.waiting)}/{self.core.queue} invocations={self.invocations} "
            f"errors={self.errors} rejected={self.rejected}>"
        )
