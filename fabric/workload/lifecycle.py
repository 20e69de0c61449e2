"""The lifecycle of one supervised service, as a transition table (sans-IO).

States::

    stopped ──start──▶ starting ──ready──▶ ready
       ▲                 │  ▲                │
       │        exit-restart  retry   exit-restart
       │                 ▼  │                │
       │              backing-off ◀──────────┘
       │                 │
       │   exit-give-up (from starting/ready) ──▶ failed ──start──▶ starting
       │   exit-done    (from starting/ready) ──▶ stopped
       └── stop: starting/ready ──▶ stopping ──stopped──▶ stopped;
                 backing-off/failed/stopped ──▶ stopped

``TRANSITIONS`` is the whole truth: ``ServiceMachine`` looks every event up
there and raises ``InvalidTransition`` (naming service, state and event) when
the table has no entry.  Which of the three exit events applies is decided by
the ``RestartTracker`` (``restart.py``).  The machine keeps what status shows:
state and since when, restarts, last error, next attempt time, and the last
``HISTORY`` transitions.
"""

from __future__ import annotations

import enum
import random as _random
from collections import deque
from collections.abc import Callable

import msgspec

from .errors import InvalidTransition
from .restart import Done, GiveUp, Restart, RestartPolicy, RestartTracker

__all__ = ["HISTORY", "TRANSITIONS", "Event", "ServiceMachine", "State", "Transition"]

HISTORY = 64


class State(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    BACKING_OFF = "backing-off"
    FAILED = "failed"
    STOPPING = "stopping"


class Event(enum.Enum):
    START = "start"
    READY = "ready"
    EXIT_RESTART = "exit-restart"
    EXIT_GIVE_UP = "exit-give-up"
    EXIT_DONE = "exit-done"
    RETRY = "retry"
    STOP = "stop"
    STOPPED = "stopped"


TRANSITIONS: dict[State, dict[Event, State]] = {
    State.STOPPED: {Event.START: State.STARTING, Event.STOP: State.STOPPED},
    State.STARTING: {
        Event.READY: State.READY,
        Event.EXIT_RESTART: State.BACKING_OFF,
        Event.EXIT_GIVE_UP: State.FAILED,
        Event.EXIT_DONE: State.STOPPED,
        Event.STOP: State.STOPPING,
    },
    State.READY: {
        Event.EXIT_RESTART: State.BACKING_OFF,
        Event.EXIT_GIVE_UP: State.FAILED,
        Event.EXIT_DONE: State.STOPPED,
        Event.STOP: State.STOPPING,
    },
    State.BACKING_OFF: {Event.RETRY: State.STARTING, Event.STOP: State.STOPPED},
    State.FAILED: {Event.START: State.STARTING, Event.STOP: State.STOPPED},
    State.STOPPING: {Event.STOPPED: State.STOPPED, Event.STOP: State.STOPPING},
}


class Transition(msgspec.Struct, frozen=True):
    """One step in a service's history; ``at`` is on the machine's clock."""

    at: float
    source: State
    event: Event
    target: State
    note: str | None = None


class ServiceMachine:
    """State of one service; every method takes the current time ``now``."""

    def __init__(
        self,
        name: str,
        policy: RestartPolicy,
        *,
        random: Callable[[], float] = _random.random,
        now: float = 0.0,
    ) -> None:
        self.name = name
        self.tracker = RestartTracker(policy, random)
        self.state = State.STOPPED
        self.since = now
        self.restarts = 0
        self.exits = 0
        self.last_error: str | None = None
        self.failure_reason: str | None = None
        self.next_attempt_at: float | None = None
        self.history: deque[Transition] = deque(maxlen=HISTORY)
        self.listener: Callable[[ServiceMachine, Transition], None] | None = None

    def _fire(self, event: Event, now: float, note: str | None = None) -> State:
        target = TRANSITIONS[self.state].get(event)
        if target is None:
            raise InvalidTransition(self.name, self.state.value, event.value)
        transition = Transition(now, self.state, event, target, note)
        self.history.append(transition)
        if target is not self.state:
            self.since = now
        self.state = target
        if self.listener is not None:
            self.listener(self, transition)
        return target

    def start(self, now: float) -> None:
        """Start (from stopped, or a manual restart of a failed service)."""
        if self.state is State.FAILED:
            self.tracker.reset()
            self.failure_reason = None
        self._fire(Event.START, now)
        self.tracker.started(now)

    def ready(self, now: float) -> None:
        self._fire(Event.READY, now)

    def exited(self, now: float, error: str | None) -> Restart | GiveUp | Done:
        """The instance ended (``error`` is None for a clean exit).  Returns the decision."""
        if self.state not in (State.STARTING, State.READY):
            raise InvalidTransition(self.name, self.state.value, "exit")
        self.exits += 1
        if error is not None:
            self.last_error = error
        decision = self.tracker.exited(now, failed=error is not None)
        match decision:
            case Restart(delay=delay):
                self.next_attempt_at = now + delay
                self._fire(Event.EXIT_RESTART, now, error)
            case GiveUp(reason=reason):
                self.failure_reason = reason
                self._fire(Event.EXIT_GIVE_UP, now, reason)
            case Done():
                self._fire(Event.EXIT_DONE, now)
        return decision

    def retry(self, now: float) -> None:
        """The backoff delay elapsed: start the next instance."""
        self.next_attempt_at = None
        self.restarts += 1
        self._fire(Event.RETRY, now)
        self.tracker.started(now)

    def stop(self, now: float) -> bool:
        """Ask to stop; returns True when a running instance must be stopped first."""
        running = self.state in (State.STARTING, State.READY, State.STOPPING)
        if TRANSITIONS[self.state].get(Event.STOP) is not None:
            self.next_attempt_at = None
        self._fire(Event.STOP, now)
        return running

    def stopped(self, now: float, note: str | None = None) -> None:
        """The running instance is gone after a ``stop``."""
        self._fire(Event.STOPPED, now, note)

    def __repr__(self) -> str:
        return (
            f"<ServiceMachine {self.name!r} state={self.state.value} "
            f"restarts={self.restarts} exits={self.exits}>"
        )
