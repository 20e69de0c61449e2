"""Restart policy and crash-loop tracking (sans-IO).

Theory of operation
-------------------
A service instance starts (``started(now)``) and later exits (``exited(now,
failed=...)``).  On each exit the tracker answers with one decision:

* ``Restart(delay, attempt)``: start again after ``delay`` seconds;
* ``GiveUp(reason)``: too many restarts within ``window`` seconds (a crash
  loop), or a failure under ``mode = "never"``: the service is failed;
* ``Done()``: a clean exit that the mode does not restart (``on-failure`` or
  ``never``): the service is stopped.

Backoff: the first restart waits ``initial_backoff``; each further restart
multiplies the previous base by ``multiplier``, capped at ``max_backoff``.
Jitter draws the delay uniformly from ``[base * (1 - jitter), base]`` so the
delay never exceeds ``max_backoff``.  When an instance stayed up for at least
``reset_after`` seconds, the backoff starts again from ``initial_backoff``.

Crash loop: exits that would restart are counted over a sliding window of
``window`` seconds; the exit that makes the count exceed ``max_restarts``
gives up.  ``max_restarts = 0`` gives up on the first exit.

Time is whatever the caller passes as ``now`` (the loop's monotonic clock);
randomness comes from an injectable ``random() -> float in [0, 1)``.
"""

from __future__ import annotations

import random as _random
from collections import deque
from collections.abc import Callable
from typing import Literal

import msgspec

__all__ = ["Done", "GiveUp", "Restart", "RestartDecision", "RestartPolicy", "RestartTracker"]

RestartMode = Literal["always", "on-failure", "never"]


class RestartPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How a service is restarted.  Times are seconds."""

    mode: RestartMode = "always"
    initial_backoff: float = 0.1
    max_backoff: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.1
    max_restarts: int = 5
    window: float = 60.0
    reset_after: float = 30.0


class Restart(msgspec.Struct, frozen=True):
    """Start again after ``delay`` seconds; ``attempt`` counts restarts since the last reset."""

    delay: float
    attempt: int


class GiveUp(msgspec.Struct, frozen=True):
    """Do not restart: the service is failed."""

    reason: str


class Done(msgspec.Struct, frozen=True):
    """Do not restart: a clean exit the policy leaves stopped."""


RestartDecision = Restart | GiveUp | Done


class RestartTracker:
    """Decides what happens after each exit of one service."""

    def __init__(self, policy: RestartPolicy, random: Callable[[], float] = _random.random) -> None:
        self.policy = policy
        self._random = random
        self._started_at: float | None = None
        self._base: float | None = None  # base delay of the last restart, None after a reset
        self._attempt = 0
        self._exits: deque[float] = deque()  # times of counted exits within the window

    def started(self, now: float) -> None:
        self._started_at = now

    def exited(self, now: float, *, failed: bool) -> RestartDecision:
        """Record an exit at ``now`` (``failed``: raised, trapped or exited non-zero)."""
        policy = self.policy
        uptime = None if self._started_at is None else now - self._started_at
        self._started_at = None
        if uptime is not None and uptime >= policy.reset_after:
            self._base = None
            self._attempt = 0
        if policy.mode == "never" or (policy.mode == "on-failure" and not failed):
            return GiveUp('it exited and restart mode is "never"') if failed else Done()
        while self._exits and self._exits[0] <= now - policy.window:
            self._exits.popleft()
        self._exits.append(now)
        if len(self._exits) > policy.max_restarts:
            return GiveUp(
                f"crash loop: {len(self._exits)} exits within {policy.window:g}s "
                f"(max_restarts = {policy.max_restarts})"
            )
        if self._base is None:
            base = policy.initial_backoff
        else:
            base = self._base * policy.multiplier
        base = min(base, policy.max_backoff)
        self._base = base
        self._attempt += 1
        delay = base * (1.0 - policy.jitter * self._random())
        return Restart(delay=max(0.0, delay), attempt=self._attempt)

    def reset(self) -> None:
        """Forget the crash history (a manual restart of a failed service)."""
        self._started_at = None
        self._base = None
        self._attempt = 0
        self._exits.clear()

    @property
    def exits_in_window(self) -> int:
        return len(self._exits)

    def __repr__(self) -> str:
        return (
            f"<RestartTracker mode={self.policy.mode} attempt={self._attempt} "
            f"exits_in_window={len(self._exits)}>"
        )
