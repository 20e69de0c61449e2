"""``Pool``: the asyncio layer over the sans-IO :class:`~pools._state.PoolState`.

Every public method mutates the state, calls :meth:`Pool._step`, and carries out the
returned plan: wake served waiters, start background opens, start background closes,
re-arm the single maintenance timer (lifetime, idle timeout, min_size retries). The
driver subclasses (PostgreSQL, MySQL) provide only connect / ping / reset / close.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from ._config import DatabaseConfig, PoolStats
from ._errors import AcquireTimeout, ConnectFailed, PoolClosed, PoolError
from ._lease import Lease
from ._state import PoolState, Slot, Waiter

__all__ = ["Pool"]

_MIN_TIMER_DELAY = 0.005  # never re-arm the maintenance timer closer than this


def _expire(task: asyncio.Task[Any], expired: list[bool]) -> None:
    """A reset's time limit passed: cancel the task running it."""
    expired.append(True)
    task.cancel()


class Pool(abc.ABC):
    """A pool of connections to one database, lent out as :class:`Lease` objects."""

    kind: ClassVar[str] = ""
    _driver_name: ClassVar[str] = ""

    def __init__(self, config: DatabaseConfig) -> None:
        if config.kind != self.kind:
            raise ValueError(f"{type(self).__name__} needs kind={self.kind!r}, not {config.kind!r}")
        self._config = config
        self._state: PoolState[Any] = PoolState(
            min_size=config.min_size,
            max_size=config.max_size,
            max_lifetime=config.max_lifetime,
            idle_timeout=config.idle_timeout,
            health_check_after=config.health_check_after,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeups: dict[Waiter[Any], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._drained: asyncio.Event | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._last_connect_error: ConnectFailed | None = None

    # -- driver hooks ------------------------------------------------------------------

    @abc.abstractmethod
    async def _connect(self) -> Any:
        """Open one connection (bounded by connect_timeout)."""

    @abc.abstractmethod
    async def _ping(self, conn: Any) -> None:
        """Cheap round trip proving the connection works."""

    @abc.abstractmethod
    async def _reset(self, conn: Any) -> None:
        """Roll back and reset session state so the next lease sees a fresh session."""

    @abc.abstractmethod
    async def _close_connection(self, conn: Any) -> None:
        """Close gracefully."""

    @abc.abstractmethod
    def _terminate_connection(self, conn: Any) -> None:
        """Close the socket now, no goodbye."""

    @abc.abstractmethod
    def _is_closed(self, conn: Any) -> bool:
        """True if the socket is known to be closed (checked before handing a slot out)."""

    @abc.abstractmethod
    def _make_lease(self, slot: Slot[Any]) -> Lease: ...

    # -- public API ----------------------------------------------------------------------

    @property
    def config(self) -> DatabaseConfig:
        return self._config

    @property
    def closed(self) -> bool:
        return self._state.closed

    async def start(self) -> None:
        """Open ``min_size`` connections; raise :class:`ConnectFailed` if that fails.

        Optional: ``acquire()`` on a pool that was never started opens connections on
        demand. A pool whose start failed is closed.
        """
        self._bind_loop()
        if self._state.closed:
            raise PoolClosed("the pool is closed")
        errors_before = self._state.errors
        self._step()
        while self._state.opening:
            pending = [task for task in self._tasks if not task.done()]
            if not pending:  # pragma: no cover - opens always run as tasks
                break
            await asyncio.wait(pending)
        opened = self._state.idle + self._state.in_use
        error = self._last_connect_error
        if self._state.errors > errors_before and opened < self._state.min_size:
            await self.close()
            raise ConnectFailed(f"could not open min_size connections: {error}") from error

    async def acquire(self, timeout: float | None = None) -> Lease:
        """Borrow a connection, waiting at most ``timeout`` seconds (default: the config's
        ``acquire_timeout``). Raises :class:`AcquireTimeout`, :class:`PoolClosed` or
        :class:`ConnectFailed`."""
        loop = self._bind_loop()
        slot = self._state.take_idle(loop.time())
        if slot is not None and not self._is_closed(slot.conn):
            self._state.lease_started(0.0)
            return self._make_lease(slot)
        if slot is not None:  # closed under us: retire it, check its siblings
            self._state.mark_suspect(loop.time())
            self._state.abandon_slot(slot)
            self._step()
        if timeout is None:
            timeout = self._config.acquire_timeout
        started = time.perf_counter()  # wait percentiles; uvloop's clock ticks in ms
        deadline = loop.time() + timeout
        front = False
        while True:
            waiter = self._state.enqueue(loop.time(), front=front)
            self._step()
            if not waiter.done:
                await self._wait(waiter, deadline, timeout)
            if waiter.error is not None:
                raise waiter.error
            slot = waiter.slot
            assert slot is not None
            if self._is_closed(slot.conn):
                self._state.mark_suspect(loop.time())
                self._state.release(slot, loop.time(), reuse=False, failed=True)
                self._step()
                front = True
                continue
            if waiter.needs_check:
                if loop.time() >= deadline:  # no time left to check it: put it back unused
                    self._state.abandon(waiter, timed_out=True)
                    self._step()
                    raise AcquireTimeout(f"no connection became available within {timeout:g}s")
                if not await self._check(slot, deadline):
                    front = True
                    continue
            self._state.lease_started(time.perf_counter() - started)
            return self._make_lease(slot)

    async def release(self, lease: Lease, *, discard: bool = False) -> None:
        """Give a lease back. Rolls back an open transaction and resets the session;
        ``discard=True`` closes the connection instead. Idempotent; the reset finishes
        even if the caller is cancelled."""
        task = self.start_release(lease, discard=discard)
        if not task.done():
            await asyncio.shield(task)

    def start_release(self, lease: Lease, *, discard: bool = False) -> asyncio.Future[None]:
        """`release` without waiting: start giving the lease back and return a
        future done once the connection is back in the pool (or closed). The
        reset runs in a task of its own; nothing cancels it. Idempotent."""
        if lease._owner is not self:
            raise PoolError("this lease belongs to another pool")
        task = lease._release_task
        if task is not None:
            return task
        loop = self._bind_loop()
        slot, reusable, needs_reset = lease._detach(
            discard, reset_always=self._config.reset == "always"
        )
        if not needs_reset:
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            lease._release_task = done
            now = loop.time()
            self._state.release(slot, now, reuse=reusable)
            if (
                not reusable
                or self._timer is None
                or not self._state.quiet_return(slot, self._timer_at, now)
            ):
                self._step()
            return done
        task = lease._release_task = loop.create_task(self._reset_and_return(slot))
        return task

    def lease(self, timeout: float | None = None) -> contextlib.AbstractAsyncContextManager[Lease]:
        """``async with pool.lease() as lease:`` acquires and always releases."""
        return self._lease_cm(timeout)

    def statistics(self) -> PoolStats:
        return self._state.stats(self.kind)

    def expire_connections(self) -> None:
        """Replace every connection: idle ones now, lent ones when they come back."""
        self._state.expire_all()
        self._step()

    async def close(self, *, timeout: float | None = None) -> None:
        """Stop lending, fail waiters with :class:`PoolClosed`, close idle connections and
        wait up to ``timeout`` (default ``acquire_timeout``) for leases to come back;
        connections still lent after that are terminated. Idempotent."""
        self._bind_loop()
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close(timeout))
        await asyncio.shield(self._close_task)

    def terminate(self) -> None:
        """Close every connection at once, lent or not, without waiting."""
        self._state.close()
        if self._loop is None:
            return
        plan = self._state.step(self._now())
        for slot in plan.close:
            self._terminate_connection(slot.conn)
        for slot in self._state.in_use_slots():
            self._terminate_connection(slot.conn)
        self._wake(plan.served)
        self._cancel_timer()

    def __repr__(self) -> str:
        s = self._state
        where = f"{self._config.host}:{self._config.resolved_port}/{self._config.database}"
        return (
            f"<{type(self).__name__} {where} size={s.idle + s.in_use} idle={s.idle} "
            f"in_use={s.in_use} opening={s.opening} waiting={s.waiting} "
            f"max_size={s.max_size}{' closed' if s.closed else ''}>"
        )

    # -- lease callbacks -----------------------------------------------------------------

    def _lease_connection_lost(self) -> None:
        self._state.errors += 1
        self._state.mark_suspect(self._now())

    def _lease_statement_error(self) -> None:
        self._state.statement_errors += 1

    # -- machinery -----------------------------------------------------------------------

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._drained = asyncio.Event()
        elif self._loop is not loop:
            raise PoolError("a pool is bound to the event loop that first used it")
        return loop

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    @contextlib.asynccontextmanager
    async def _lease_cm(self, wait: float | None) -> AsyncIterator[Lease]:
        lease = await self.acquire(wait)
        try:
            yield lease
        finally:
            await self.release(lease)

    async def _wait(self, waiter: Waiter[Any], deadline: float, budget: float) -> None:
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        self._wakeups[waiter] = fut
        try:
            async with asyncio.timeout_at(deadline):
                await fut
        except TimeoutError:
            if waiter.done:  # served just as the deadline passed: keep the connection
                return
            self._state.abandon(waiter, timed_out=True)
            self._step()
            raise AcquireTimeout(
                f"no connection became available within {budget:g}s ({self!r})"
            ) from None
        except BaseException:
            self._state.abandon(waiter)
            self._step()
            raise
        finally:
            del self._wakeups[waiter]

    async def _check(self, slot: Slot[Any], deadline: float) -> bool:
        """Health-check a slot that sat idle; on failure it is closed and False returned."""
        assert self._loop is not None
        limit = min(deadline, self._loop.time() + self._config.connect_timeout)
        try:
            async with asyncio.timeout_at(limit):
                await self._ping(slot.conn)
        except BaseException as exc:
            self._state.mark_suspect(self._loop.time())
            self._state.release(slot, self._loop.time(), reuse=False, failed=True)
            self._step()
            if not isinstance(exc, Exception):
                raise
            if self._loop.time() >= deadline:
                self._state.timeouts += 1
                raise AcquireTimeout("no healthy connection available in time") from exc
            return False
        return True

    async def _reset_and_return(self, slot: Slot[Any]) -> None:
        assert self._loop is not None
        ok = False
        # The reset's time limit: a timer that cancels this task (what
        # asyncio.timeout does, without a scope object on every release).
        task = asyncio.current_task()
        assert task is not None
        expired: list[bool] = []
        timer = self._loop.call_later(self._config.connect_timeout, _expire, task, expired)
        try:
            await self._reset(slot.conn)
            ok = True
        except asyncio.CancelledError:
            if not expired or task.uncancel() > 0:
                raise
            # the reset ran past its time: the connection is closed below
        except Exception:
            pass  # the connection is closed below and replaced on demand
        finally:
            timer.cancel()
            now = self._now()
            self._state.release(slot, now, reuse=ok, failed=not ok)
            if (
                not ok
                or self._timer is None
                or not self._state.quiet_return(slot, self._timer_at, now)
            ):
                self._step()

    def _step(self) -> None:
        now = self._now()
        plan = self._state.step(now)
        self._wake(plan.served)
        for _ in range(plan.open):
            self._spawn(self._open_one())
        for slot in plan.close:
            self._spawn(self._close_slot(slot))
        if self._state.closed:
            if self._state.in_use == 0 and self._state.opening == 0 and self._drained:
                self._drained.set()
            return
        when = self._state.next_deadline(now)
        if when is None:
            return
        when = max(when, now + _MIN_TIMER_DELAY)
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        assert self._loop is not None
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._step()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self, served: list[Waiter[Any]]) -> None:
        for waiter in served:
            fut = self._wakeups.get(waiter)
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_one(self) -> None:
        cfg = self._config
        try:
            conn = await self._connect()
        except BaseException as exc:
            error = ConnectFailed(
                f"could not connect to {self._driver_name} at "
                f"{cfg.host}:{cfg.resolved_port}/{cfg.database}: {exc!r}"
            )
            error.__cause__ = exc
            self._last_connect_error = error
            self._state.open_failed(self._now(), error)
            self._step()
            if not isinstance(exc, Exception):
                raise
            return
        self._state.opened(conn, self._now())
        self._step()

    async def _close_slot(self, slot: Slot[Any]) -> None:
        try:
            async with asyncio.timeout(self._config.connect_timeout):
                await self._close_connection(slot.conn)
        except Exception:
            self._terminate_connection(slot.conn)
        except BaseException:
            self._terminate_connection(slot.conn)
            raise

    async def _close(self, grace: float | None) -> None:
        assert self._drained is not None
        self._state.close()
        self._cancel_timer()
        self._step()
        wait = self._config.acquire_timeout if grace is None else grace
        try:
            async with asyncio.timeout(wait):
                await self._drained.wait()
        except TimeoutError:
            for slot in self._state.in_use_slots():
                self._terminate_connection(slot.conn)
        while pending := [task for task in self._tasks if not task.done()]:
            await asyncio.gather(*pending, return_exceptions=True)
