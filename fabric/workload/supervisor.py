"""An asyncio supervisor for services, independent of wasm.

A service is anything with the ``Runnable`` shape: ``run()`` runs until the
service exits (returns), crashes (raises) or is cancelled; ``is_ready()`` says
whether it serves yet (e.g. "listening on all declared ports");
``stats()`` returns whatever it publishes for status (or None); an optional
``metrics()`` returns `MetricFamily`s for the metrics endpoint.  The
supervisor takes a *factory* per service and builds a fresh instance for
every (re)start.

Per service, a driver task runs: build → run → poll ``is_ready()`` until ready
or ``ready_timeout`` (then it is cancelled and counts as a failed start) →
wait for the exit → ask the ``ServiceMachine`` (``lifecycle.py``) what next:
back off and restart, give up (failed, last error kept), or stay stopped.

``start()`` launches services in the order they were added, each once the
previous one has left ``starting`` (ready, backing off or failed).  ``stop()``
goes in reverse order: cancel the instance and wait up to its
``stop_timeout``.  A ``SystemExit`` raised by an instance is an exit with that
status, never the end of the process.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .errors import NotFound, ServiceFailed, WorkloadError
from .lifecycle import ServiceMachine, State, Transition
from .restart import Restart, RestartPolicy
from .status import MetricFamily, ServiceStatus, SupervisorStats
from .units import format_duration

__all__ = ["Runnable", "ServiceFactory", "Supervisor"]

_log = logging.getLogger("fabric.workload.supervisor")


class Runnable(Protocol):
    """One instance of a service."""

    async def run(self) -> None: ...
    def is_ready(self) -> bool: ...
    def stats(self) -> Any: ...


ServiceFactory = Callable[[], Runnable]
TransitionCallback = Callable[[str, Transition], None]


def describe_error(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Entry:
    def __init__(
        self,
        name: str,
        factory: ServiceFactory,
        machine: ServiceMachine,
        ready_timeout: float,
        stop_timeout: float,
        kind: str,
        ports: tuple[int, ...],
    ) -> None:
        self.name = name
        self.factory = factory
        self.machine = machine
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.kind = kind
        self.ports = ports
        self.driver: asyncio.Task[None] | None = None
        self.instance: Runnable | None = None
        self.run_task: asyncio.Task[str | None] | None = None


class Supervisor:
    """Starts, watches, restarts and stops a set of services."""

    def __init__(
        self,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        poll_interval: tuple[float, float] = (0.005, 0.1),
        on_transition: TransitionCallback | None = None,
    ) -> None:
        self.name = name
        self._clock = clock
        self._wall = wall
        self._random = random
        self._poll_min, self._poll_max = poll_interval
        self._on_transition = on_transition
        self._entries: dict[str, _Entry] = {}
        self._launched: list[_Entry] = []  # start order
        self._changed = asyncio.Event()
        self._running = False
        self._metrics_failed: set[str] = set()

    # -- configuration -------------------------------------------------------

    def add(
        self,
        name: str,
        factory: ServiceFactory,
        *,
        policy: RestartPolicy | None = None,
        ready_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        kind: str = "",
        ports: Sequence[int] = (),
    ) -> None:
        """Register a service; ``factory()`` builds a new instance for every start."""
        if name in self._entries:
            raise WorkloadError(f"supervisor {self.name!r}: service {name!r} added twice")
        machine = ServiceMachine(
            name, policy or RestartPolicy(), random=self._random, now=self._clock()
        )
        machine.listener = self._transition
        self._entries[name] = _Entry(
            name, factory, machine, ready_timeout, stop_timeout, kind, tuple(ports)
        )

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Start every service in order; each waits for the previous to leave ``starting``."""
        if self._running:
            raise WorkloadError(f"supervisor {self.name!r} is already running")
        self._running = True
        for entry in self._entries.values():
            if not self._running:  # stop() was called while starting
                return
            await self._launch(entry)

    async def stop(self) -> None:
        """Stop every service in reverse start order."""
        self._running = False
        for entry in reversed(self._launched):
            await self._stop_entry(entry)
        self._launched.clear()

    async def restart(self, name: str) -> None:
        """Start a service again that is ``failed`` or ``stopped`` (its crash history resets)."""
        entry = self._entry(name)
        if entry.machine.state not in (State.FAILED, State.STOPPED):
            raise WorkloadError(f"service {name!r} is {entry.machine.state.value}, not stopped")
        if entry in self._launched:
            self._launched.remove(entry)
        await self._launch(entry)

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _launch(self, entry: _Entry) -> None:
        machine = entry.machine
        machine.start(self._clock())
        self._launched.append(entry)
        exits = machine.exits
        entry.driver = asyncio.create_task(self._drive(entry), name=f"supervise:{entry.name}")
        entry.driver.add_done_callback(self._driver_done)
        while machine.state is State.STARTING and machine.exits == exits:
            if entry.driver.done():
                break
            await self._wait_change()

    async def _drive(self, entry: _Entry) -> None:
        machine = entry.machine
        while True:
            error = await self._attempt(entry)
            decision = machine.exited(self._clock(), error)
            if not isinstance(decision, Restart):
                return
            due = machine.next_attempt_at
            assert due is not None
            remaining = due - self._clock()
            while remaining > 0:  # timers may fire a hair early: never restart before `due`
                await asyncio.sleep(remaining)
                remaining = due - self._clock()
            machine.retry(self._clock())

    async def _attempt(self, entry: _Entry) -> str | None:
        """Run one instance to its end; return its error (None for a clean exit)."""
        try:
            instance = entry.factory()
        except Exception as exc:
            _log.warning("service %s: factory failed", entry.name, exc_info=True)
            return describe_error(exc)
        entry.instance = instance
        task = asyncio.create_task(
            self._run_instance(entry, instance), name=f"service:{entry.name}"
        )
        entry.run_task = task
        not_ready = await self._await_ready(entry, instance, task)
        if not_ready is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=entry.stop_timeout)
            return not_ready
        if not task.done():
            entry.machine.ready(self._clock())
            await asyncio.wait({task})
        if task.cancelled():
            return "cancelled"
        return task.result()

    async def _run_instance(self, entry: _Entry, instance: Runnable) -> str | None:
        try:
            await instance.run()
        except SystemExit as exc:
            if exc.code in (None, 0):
                return None
            return f"exited with status {exc.code}"
        except Exception as exc:
            _log.warning("service %s crashed", entry.name, exc_info=True)
            return describe_error(exc)
        return None

    async def _await_ready(
        self, entry: _Entry, instance: Runnable, task: asyncio.Task[str | None]
    ) -> str | None:
        """None once ready (or exited); a reason when not ready within ``ready_timeout``."""
        deadline = self._clock() + entry.ready_timeout
        interval = self._poll_min
        await asyncio.sleep(0)  # let run() begin: a service that dies at once was never ready
        while not task.done():
            try:
                if instance.is_ready():
                    return None
            except Exception as exc:
                return f"readiness check failed: {describe_error(exc)}"
            remaining = deadline - self._clock()
            if remaining <= 0:
                return f"not ready within {format_duration(entry.ready_timeout)}"
            await asyncio.wait({task}, timeout=min(interval, remaining))
            interval = min(interval * 2, self._poll_max)
        return None

    async def _stop_entry(self, entry: _Entry) -> None:
        machine = entry.machine
        if machine.state is State.STOPPED:
            return
        machine.stop(self._clock())
        driver, run_task = entry.driver, entry.run_task
        if driver is not None and not driver.done():
            driver.cancel()
        note = None
        if run_task is not None and not run_task.done():
            run_task.cancel()
            done, _ = await asyncio.wait({run_task}, timeout=entry.stop_timeout)
            if not done:
                note = f"did not stop within {format_duration(entry.stop_timeout)}"
                _log.warning("service %s %s", entry.name, note)
        if driver is not None:
            await asyncio.wait({driver})
        if machine.state is State.STOPPING:
            machine.stopped(self._clock(), note)
        entry.instance = None

    def _driver_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _log.error("supervisor driver %s failed", task.get_name(), exc_info=task.exception())
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- observation ---------------------------------------------------------

    def _transition(self, machine: ServiceMachine, transition: Transition) -> None:
        if transition.target is State.BACKING_OFF:
            _log.warning(
                "service %s exited (%s); restarting in %.3fs",
                machine.name,
                transition.note or "clean exit",
                (machine.next_attempt_at or transition.at) - transition.at,
            )
        elif transition.target is State.FAILED:
            _log.error("service %s failed: %s", machine.name, transition.note)
        else:
            _log.info("service %s: %s", machine.name, transition.target.value)
        self._notify()
        if self._on_transition is not None:
            self._on_transition(machine.name, transition)

    async def _wait_change(self) -> None:
        await self._changed.wait()

    async def wait_for(self, name: str, *states: State) -> ServiceStatus:
        """Wait until service ``name`` is in one of ``states`` (bound it with asyncio.timeout).

        Raises ``ServiceFailed`` if it fails meanwhile, unless ``State.FAILED`` is
        among ``states``.
        """
        machine = self._entry(name).machine
        while machine.state not in states:
            if machine.state is State.FAILED:
                raise ServiceFailed(name, machine.last_error, machine.failure_reason or "")
            await self._wait_change()
        return self.status(name)

    def transitions(self, name: str) -> list[Transition]:
        """The recent transitions of service ``name``, oldest first."""
        return list(self._entry(name).machine.history)

    def state(self, name: str) -> State:
        return self._entry(name).machine.state

    def status(self, name: str) -> ServiceStatus:
        entry = self._entry(name)
        machine = entry.machine
        now, wall = self._clock(), self._wall()
        next_at = machine.next_attempt_at
        stats = None
        metrics: tuple[MetricFamily, ...] = ()
        if entry.instance is not None and machine.state in (State.STARTING, State.READY):
            try:
                stats = entry.instance.stats()
            except Exception as exc:
                stats = {"error": describe_error(exc)}
            metrics = self._metrics(entry)
        return ServiceStatus(
            name=name,
            state=machine.state.value,
            since=wall - (now - machine.since),
            restarts=machine.restarts,
            exits=machine.exits,
            last_error=machine.last_error,
            failure_reason=machine.failure_reason,
            next_attempt_at=None if next_at is None else wall + (next_at - now),
            kind=entry.kind,
            ports=entry.ports,
            stats=stats,
            metrics=metrics,
        )

    def _metrics(self, entry: _Entry) -> tuple[MetricFamily, ...]:
        """The metric families an instance offers (optional ``metrics()``; none on failure)."""
        offered = getattr(entry.instance, "metrics", None)
        if offered is None:
            return ()
        try:
            return tuple(offered())
        except Exception:
            if entry.name not in self._metrics_failed:  # once: scrapes come every few seconds
                self._metrics_failed.add(entry.name)
                _log.warning("service %s: metrics() failed", entry.name, exc_info=True)
            return ()

    def statistics(self) -> SupervisorStats:
        return SupervisorStats(
            services=tuple(self.status(name) for name in self._entries), running=self._running
        )

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise NotFound(f"supervisor {self.name!r} has no service {name!r}") from None

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for entry in self._entries.values():
            key = entry.machine.state.value
            counts[key] = counts.get(key, 0) + 1
        shown = "".join(f" {state}={n}" for state, n in sorted(counts.items()))
        return f"<Supervisor {self.name!r} services={len(self._entries)}{shown}>"
