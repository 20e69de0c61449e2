"""Warm instances of a component, reused across invocations (``reuse = {...}``).

``ReuseCore`` is the bookkeeping, with no loop and no clock of its own:
which warm instance the next invocation gets (the most recently used one, so
surplus instances reach the idle limit), whether an instance that returned
cleanly goes back or retires, and why each one retired.  ``InstancePool``
wraps it for asyncio: it closes retired instances and reclaims idle ones
with one timer.

The contract (``docs/manifest.md``): one invocation at a time per instance;
an instance goes back to the pool only after a clean return; a trap, a
deadline, a cancellation or any exit (``wasi:cli/exit`` or ``run`` returning
an error) retires it.  What the guest keeps in memory and the handles it
holds (an open connection to a service of the workload) persist; arguments,
environment, stdio routing, deadline and accounting are set per invocation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from fabric.engine import DeadlineExceeded, GuestExit, GuestTrap, Instance
from fabric.wasi import WasiCtx

from .status import PoolStatus

__all__ = [
    "REASONS",
    "InstancePool",
    "PooledInstance",
    "ReuseCore",
    "retire_reason",
]

T = TypeVar("T")

#: Why an instance retired, in the order ``fabric status`` lists them.
REASONS = (
    "trap",  # the guest trapped (or a host function failed under it)
    "deadline",  # it ran past the component's timeout
    "cancelled",  # the invocation was cancelled
    "exit",  # it called wasi:cli/exit, or run returned an error
    "error",  # anything else raised while it ran
    "max-invocations",  # it served reuse.max_invocations invocations
    "pool-full",  # it returned while pool_size instances were already warm
    "idle",  # it waited warm for reuse.idle
    "stopped",  # the workload stopped
)


def retire_reason(exc: BaseException) -> str:
    """The retirement reason for an invocation that ended with ``exc``."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, DeadlineExceeded):
        return "deadline"
    if isinstance(exc, GuestExit):
        return "exit"
    if isinstance(exc, GuestTrap):
        return "trap"
    return "error"


class ReuseCore(Generic[T]):
    """Warm instances on a stack, busy and retired counts; no loop, no clock.

    Times are whatever clock the caller passes (``now``); ``idle`` is in the
    same unit.  Each warm entry remembers how many invocations it served."""

    def __init__(self, name: str, *, max_invocations: int, pool_size: int, idle: float) -> None:
        if max_invocations < 1 or pool_size < 1 or idle <= 0:
            raise ValueError(
                f"{name}: need max_invocations >= 1, pool_size >= 1 and idle > 0, "
                f"got {max_invocations}, {pool_size}, {idle}"
            )
        self.name = name
        self.max_invocations = max_invocations
        self.pool_size = pool_size
        self.idle = idle
        self._warm: list[tuple[T, int, float]] = []  # (item, uses, since); last = newest
        self.busy = 0
        self.started = 0
        self.reused = 0
        self.retired: dict[str, int] = {}
        self.closed = False

    @property
    def warm(self) -> int:
        return len(self._warm)

    def take(self) -> tuple[T, int] | None:
        """The most recently used warm instance and its use count, now busy;
        ``None`` when the invocation should start a fresh instance."""
        if self.closed or not self._warm:
            return None
        item, uses, _ = self._warm.pop()
        self.busy += 1
        self.reused += 1
        return item, uses

    def start(self) -> None:
        """A fresh instance was created for an invocation; it is busy."""
        self.busy += 1
        self.started += 1

    def give_back(self, item: T, uses: int, now: float) -> str | None:
        """A clean return after ``uses`` invocations in all: ``None`` when the
        instance went back warm, else the reason it retires (the caller closes it)."""
        self.busy -= 1
        if self.closed:
            reason = "stopped"
        elif uses >= self.max_invocations:
            reason = "max-invocations"
        elif len(self._warm) >= self.pool_size:
            reason = "pool-full"
        else:
            self._warm.append((item, uses, now))
            return None
        self._count(reason)
        return reason

    def retire(self, reason: str) -> None:
        """A busy instance ended badly (``retire_reason``); the caller closes it."""
        self.busy -= 1
        self._count(reason)

    def expire(self, now: float) -> list[T]:
        """Warm instances idle for ``idle`` or longer, removed (the caller closes them)."""
        cut = 0
        while cut < len(self._warm) and now - self._warm[cut][2] >= self.idle:
            cut += 1
        gone = [item for item, _, _ in self._warm[:cut]]
        del self._warm[:cut]
        if gone:
            self._count("idle", len(gone))
        return gone

    def next_expiry(self) -> float | None:
        """When the longest-idle warm instance reaches the idle limit (None: none warm)."""
        return self._warm[0][2] + self.idle if self._warm else None

    def close(self) -> list[T]:
        """Stop reusing: every warm instance, removed; busy ones retire when they return."""
        self.closed = True
        gone = [item for item, _, _ in self._warm]
        self._warm.clear()
        if gone:
            self._count("stopped", len(gone))
        return gone

    def _count(self, reason: str, n: int = 1) -> None:
        self.retired[reason] = self.retired.get(reason, 0) + n

    def statistics(self) -> PoolStatus:
        order = {r: i for i, r in enumerate(REASONS)}
        reasons = dict(sorted(self.retired.items(), key=lambda kv: order.get(kv[0], len(order))))
        return PoolStatus(
            max_invocations=self.max_invocations,
            pool_size=self.pool_size,
            idle=self.idle,
            warm=len(self._warm),
            busy=self.busy,
            started=self.started,
            reused=self.reused,
            retired=sum(self.retired.values()),
            reasons=reasons,
        )

    def __repr__(self) -> str:
        return (
            f"<ReuseCore {self.name!r} warm={len(self._warm)}/{self.pool_size} busy={self.busy} "
            f"started={self.started} reused={self.reused} retired={sum(self.retired.values())}>"
        )


class PooledInstance:
    """A live instance with its WASI context (and so its network handle)."""

    __slots__ = ("ctx", "instance", "uses")

    def __init__(self, instance: Instance, ctx: WasiCtx) -> None:
        self.instance = instance
        self.ctx = ctx
        self.uses = 0

    def close(self) -> None:
        """Close the store; that closes the context and its network attachment."""
        self.instance.store.close()
        self.ctx.close()

    def __repr__(self) -> str:
        return f"<PooledInstance {self.ctx.name} uses={self.uses} {self.instance.store!r}>"


class InstancePool:
    """``ReuseCore`` on the running loop: closes what retires, reclaims idle instances."""

    def __init__(
        self,
        name: str,
        *,
        max_invocations: int,
        pool_size: int,
        idle: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.core: ReuseCore[PooledInstance] = ReuseCore(
            name, max_invocations=max_invocations, pool_size=pool_size, idle=idle
        )
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def take(self) -> PooledInstance | None:
        taken = self.core.take()
        return None if taken is None else taken[0]

    def start(self) -> None:
        self.core.start()

    def give_back(self, item: PooledInstance) -> str | None:
        """After a clean return: keep it warm, or close it (returns the reason)."""
        reason = self.core.give_back(item, item.uses, self._now())
        if reason is not None:
            item.close()
        else:
            self._arm()
        return reason

    def retire(self, item: PooledInstance, reason: str) -> None:
        self.core.retire(reason)
        item.close()

    def _arm(self) -> None:
        # The oldest warm instance sits at the bottom of the stack and newer
        # ones are pushed on top, so the next expiry never moves earlier: a
        # pending timer fires at or before it, and re-arms if it was early.
        at = self.core.next_expiry()
        if at is None or self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(at - self._now(), 0.001), self._expire)

    def _expire(self) -> None:
        self._timer = None
        for item in self.core.expire(self._now()):
            item.close()
        if self.core.warm:
            self._arm()

    def close(self) -> None:
        """The workload stops: close every warm instance now, busy ones as they return."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for item in self.core.close():
            item.close()

    def statistics(self) -> PoolStatus:
        return self.core.statistics()

    def __repr__(self) -> str:
        return f"<InstancePool {self.core!r}>"
