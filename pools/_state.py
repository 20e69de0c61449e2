"""The sans-IO core of the pool: who gets which connection, what to open, what to close.

Theory of operation
-------------------
``PoolState`` never awaits and never touches a socket. It holds the connections as
opaque handles inside :class:`Slot` records and keeps four collections:

* ``idle``: slots ready to hand out, a stack (the most recently released is reused
  first, so surplus connections stay idle long enough to be closed by the idle timeout);
* ``in_use``: slots lent out (or being health-checked / reset);
* ``opening``: a count of connections the I/O layer is opening for us;
* ``queue``: FIFO of :class:`Waiter` records, one per ``acquire()`` that is waiting.

The I/O layer mutates the state (``enqueue``, ``abandon``, ``opened``, ``open_failed``,
``release``, ``close``) and then calls :meth:`PoolState.step`, which makes every decision
at once and returns a :class:`Plan`:

1. close idle slots past their lifetime (or of an expired generation), then idle slots
   above ``min_size`` that sat idle longer than ``idle_timeout``, oldest first;
2. hand idle slots to waiters in FIFO order, flagging a health check when the slot sat
   idle longer than ``health_check_after`` or was idle when a sibling connection was
   found dead (``mark_suspect``);
3. ask for new connections for waiters that no open in flight will cover, up to
   ``max_size``;
4. ask for new connections to get back to ``min_size`` (with a backoff after failures).

The plan lists the waiters to wake, how many connections to open and which slots to
close; the I/O layer carries it out. Because a waiter that gives up (timeout or
cancellation) calls :meth:`PoolState.abandon`, which puts any slot it was just handed
back on the idle stack, no connection can leak between the two layers.

Each connection's lifetime is shortened by a random 0-2.5% so connections opened together
do not all expire together.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ._config import PoolStats
from ._errors import PoolClosed, PoolError

__all__ = ["LIFETIME_JITTER", "Plan", "PoolState", "Slot", "Waiter"]

C = TypeVar("C")

LIFETIME_JITTER = 0.025  # each connection lives max_lifetime * (1 - U(0, 2.5%))
_BACKOFF_FIRST = 0.05  # seconds before retrying a failed background (min_size) open
_BACKOFF_MAX = 2.0
_WAIT_WINDOW = 1024  # acquire waits kept for the percentiles


@dataclass(eq=False, slots=True)
class Slot(Generic[C]):
    """One open connection and the times the pool decides by."""

    conn: C
    id: int
    created_at: float
    expires_at: float
    last_used: float  # when it was opened or last released
    generation: int

    def __repr__(self) -> str:
        return f"<Slot #{self.id} gen={self.generation}>"


@dataclass(eq=False, slots=True)
class Waiter(Generic[C]):
    """One ``acquire()`` waiting in the queue. Done once it has a slot or an error."""

    id: int
    enqueued_at: float
    slot: Slot[C] | None = None
    needs_check: bool = False
    error: PoolError | None = None

    @property
    def done(self) -> bool:
        return self.slot is not None or self.error is not None


@dataclass(slots=True)
class Plan(Generic[C]):
    """What the I/O layer must do after a step."""

    served: list[Waiter[C]] = field(default_factory=list)  # wake these
    open: int = 0  # open this many new connections (already counted as opening)
    close: list[Slot[C]] = field(default_factory=list)  # close these (already removed)


class PoolState(Generic[C]):
    """Pool bookkeeping and decisions, without I/O. ``now`` is any monotonic clock."""

    def __init__(
        self,
        *,
        min_size: int,
        max_size: int,
        max_lifetime: float,
        idle_timeout: float,
        health_check_after: float,
        rng: random.Random | None = None,
    ) -> None:
        if max_size < 1 or not 0 <= min_size <= max_size:
            raise ValueError(f"need 0 <= min_size <= max_size >= 1, got {min_size}, {max_size}")
        self.min_size = min_size
        self.max_size = max_size
        self.max_lifetime = max_lifetime
        self.idle_timeout = idle_timeout
        self.health_check_after = health_check_after
        self._rng = rng if rng is not None else random.Random()
        self._ids = itertools.count(1)
        self._idle: list[Slot[C]] = []
        self._in_use: set[Slot[C]] = set()
        self._opening = 0
        self._queue: deque[Waiter[C]] = deque()
        # results of mutations, reported by the next step (``Plan[C]()`` would go
        # through typing's generic alias, a few microseconds per call)
        self._pending: Plan[C] = Plan()
        self._closed = False
        self._generation = 0
        self._suspect_before = -math.inf
        self._retry_at = -math.inf
        # No idle slot reaches its lifetime or idle timeout before this (a lower
        # bound: step skips its retirement pass until then).
        self._due_at = math.inf
        self._backoff = 0.0
        self._waits_ms: deque[float] = deque(maxlen=_WAIT_WINDOW)
        self.leases_served = 0
        self.timeouts = 0
        self.errors = 0
        self.statement_errors = 0
        self.connections_opened = 0
        self.connections_closed = 0

    # -- read-only views ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def opening(self) -> int:
        return self._opening

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def total(self) -> int:
        """Connections open or being opened."""
        return len(self._idle) + len(self._in_use) + self._opening

    def in_use_slots(self) -> list[Slot[C]]:
        return list(self._in_use)

    def __repr__(self) -> str:
        return (
            f"<PoolState idle={self.idle} in_use={self.in_use} opening={self.opening} "
            f"waiting={self.waiting}{' closed' if self._closed else ''}>"
        )

    # -- mutations -----------------------------------------------------------------------

    def enqueue(self, now: float, *, front: bool = False) -> Waiter[C]:
        """Queue an acquire. ``front`` keeps the place of a retry (failed health check)."""
        if self._closed:
            raise PoolClosed("the pool is closed")
        waiter: Waiter[C] = Waiter(id=next(self._ids), enqueued_at=now)
        if front:
            self._queue.appendleft(waiter)
        else:
            self._queue.append(waiter)
        return waiter

    def abandon(self, waiter: Waiter[C], *, timed_out: bool = False) -> None:
        """The acquirer gave up (timeout, cancellation). A slot it was given goes back."""
        if timed_out:
            self.timeouts += 1
        slot, waiter.slot = waiter.slot, None
        if slot is not None:
            self._in_use.discard(slot)
            self._to_idle(slot)
        else:
            try:
                self._queue.remove(waiter)
            except ValueError:
                pass

    def take_idle(self, now: float) -> Slot[C] | None:
        """The fast path of an acquire: the most recently used idle slot, when nobody
        waits and it needs no health check and has not expired (else None: enqueue)."""
        if self._closed or self._queue or not self._idle:
            return None
        slot = self._idle[-1]
        if (
            now >= slot.expires_at
            or slot.generation != self._generation
            or now - slot.last_used >= self.health_check_after
            or slot.last_used <= self._suspect_before
        ):
            return None
        self._idle.pop()
        self._in_use.add(slot)
        return slot

    def abandon_slot(self, slot: Slot[C]) -> None:
        """A slot from `take_idle` that turned out closed: drop it (counted as an error)."""
        self.release(slot, -math.inf, reuse=False, failed=True)

    def quiet_return(self, slot: Slot[C], timer_at: float, now: float) -> bool:
        """After a release: True when a step would decide nothing new (nobody waits,
        the slot went idle, and the maintenance timer already fires before it needs
        attention), so the I/O layer may skip it."""
        if self._queue or self._closed or not self._idle or self._idle[-1] is not slot:
            return False
        due = slot.expires_at
        if self.total > self.min_size:
            due = min(due, slot.last_used + self.idle_timeout)
        return timer_at <= due

    def lease_started(self, waited: float) -> None:
        """A lease was handed out after ``waited`` seconds in ``acquire()``."""
        self.leases_served += 1
        self._waits_ms.append(waited * 1000.0)

    def opened(self, conn: C, now: float) -> Slot[C]:
        """A connection the plan asked for is open."""
        self._opening -= 1
        self._backoff = 0.0
        self._retry_at = -math.inf
        self.connections_opened += 1
        jitter = self._rng.uniform(0.0, LIFETIME_JITTER)
        slot = Slot(
            conn=conn,
            id=next(self._ids),
            created_at=now,
            expires_at=now + self.max_lifetime * (1.0 - jitter),
            last_used=now,
            generation=self._generation,
        )
        self._to_idle(slot)
        return slot

    def open_failed(self, now: float, error: PoolError) -> None:
        """Opening a connection failed: the oldest waiter (if any) gets ``error``."""
        self._opening -= 1
        self.errors += 1
        self._backoff = min(max(self._backoff * 2.0, _BACKOFF_FIRST), _BACKOFF_MAX)
        self._retry_at = now + self._backoff
        if self._queue and not self._idle:
            waiter = self._queue.popleft()
            waiter.error = error
            self._pending.served.append(waiter)

    def release(self, slot: Slot[C], now: float, *, reuse: bool, failed: bool = False) -> None:
        """A slot comes back. ``reuse=False`` closes it; ``failed`` counts an error."""
        if slot not in self._in_use:
            return
        self._in_use.remove(slot)
        if failed:
            self.errors += 1
        if reuse:
            slot.last_used = now
            self._to_idle(slot)
        else:
            self._drop(slot)

    def mark_suspect(self, now: float) -> None:
        """A connection was found dead: health-check every slot idle since before ``now``."""
        self._suspect_before = now

    def expire_all(self) -> None:
        """Retire every current connection: idle ones now, lent ones when released."""
        self._generation += 1
        self._due_at = -math.inf

    def close(self) -> None:
        """Stop handing out slots; the next step fails the waiters and closes idle slots."""
        self._closed = True

    # -- decisions -----------------------------------------------------------------------

    def step(self, now: float) -> Plan[C]:
        plan: Plan[C] = self._pending
        self._pending = Plan()
        if self._closed:
            for slot in self._idle:
                self._drop(slot)
            self._idle.clear()
            while self._queue:
                waiter = self._queue.popleft()
                waiter.error = PoolClosed("the pool was closed while waiting for a connection")
                plan.served.append(waiter)
            plan.close.extend(self._pending.close)
            self._pending.close.clear()
            return plan

        # 1. Retire idle slots: lifetime / generation first, then the idle timeout.
        if now >= self._due_at:
            self._retire(now)

        # 2. Hand idle slots to waiters, first come first served.
        while self._queue and self._idle:
            waiter = self._queue.popleft()
            slot = self._idle.pop()
            self._in_use.add(slot)
            waiter.slot = slot
            waiter.needs_check = (
                now - slot.last_used >= self.health_check_after
                or slot.last_used <= self._suspect_before
            )
            plan.served.append(waiter)

        # 3. Open connections for waiters that no open in flight covers.
        uncovered = len(self._queue) - self._opening
        n_open = max(0, min(uncovered, self.max_size - self.total))
        # 4. Top up to min_size (after a failure, only once the backoff has passed).
        if now >= self._retry_at:
            n_open += max(0, self.min_size - (self.total + n_open))
        self._opening += n_open
        plan.open = n_open
        plan.close.extend(self._pending.close)
        self._pending.close.clear()
        return plan

    def _retire(self, now: float) -> None:
        keep: list[Slot[C]] = []
        for slot in self._idle:
            if now >= slot.expires_at or slot.generation != self._generation:
                self._drop(slot)
            else:
                keep.append(slot)
        self._idle = keep
        excess = self.total - self.min_size
        if excess > 0:
            stale = sorted(
                (s for s in self._idle if now - s.last_used >= self.idle_timeout),
                key=lambda s: s.last_used,
            )[:excess]
            if stale:
                gone = set(stale)
                self._idle = [s for s in self._idle if s not in gone]
                for slot in stale:
                    self._drop(slot)
        timeout = self.idle_timeout
        self._due_at = min(
            (min(s.expires_at, s.last_used + timeout) for s in self._idle), default=math.inf
        )

    def next_deadline(self, now: float) -> float | None:
        """When ``step`` next has time-driven work (expiry, idle timeout, min_size retry)."""
        if self._closed:
            return None
        deadlines = [slot.expires_at for slot in self._idle]
        if self.total > self.min_size:
            deadlines.extend(slot.last_used + self.idle_timeout for slot in self._idle)
        if self.total < self.min_size and self._retry_at > now:
            deadlines.append(self._retry_at)
        return min(deadlines) if deadlines else None

    # -- statistics ----------------------------------------------------------------------

    def stats(self, kind: str) -> PoolStats:
        waits = sorted(self._waits_ms)
        return PoolStats(
            kind=kind,
            size=self.idle + self.in_use,
            idle=self.idle,
            in_use=self.in_use,
            waiting=self.waiting,
            acquire_wait_p50_ms=_percentile(waits, 50.0),
            acquire_wait_p99_ms=_percentile(waits, 99.0),
            leases_served=self.leases_served,
            timeouts=self.timeouts,
            errors=self.errors,
            connections_opened=self.connections_opened,
            connections_closed=self.connections_closed,
            opening=self.opening,
            min_size=self.min_size,
            max_size=self.max_size,
            statement_errors=self.statement_errors,
        )

    # -- internals -----------------------------------------------------------------------

    def _to_idle(self, slot: Slot[C]) -> None:
        if self._closed or slot.generation != self._generation:
            self._drop(slot)
        else:
            self._idle.append(slot)
            due = min(slot.expires_at, slot.last_used + self.idle_timeout)
            if due < self._due_at:
                self._due_at = due

    def _drop(self, slot: Slot[C]) -> None:
        self.connections_closed += 1
        self._pending.close.append(slot)


def _percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no samples."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]
