"""``wasi:clocks`` — monotonic clock with pollables on loop timers, wall clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fabric.engine import HostInterface

from .io import Pollable


class InstantPollable(Pollable):
    """A monotonic-clock pollable: ready at ``deadline_ns``."""

    def __init__(self, deadline_ns: int) -> None:
        super().__init__(self._is_due, self._sleep, deadline_ns)
        self._due = deadline_ns

    def _is_due(self) -> bool:
        return time.monotonic_ns() >= self._due

    async def _sleep(self) -> None:
        # uvloop timers may fire up to ~1 ms early; Pollable.block re-checks.
        remaining = self._due - time.monotonic_ns()
        if remaining > 0:
            await asyncio.sleep(remaining / 1e9)


def _instant_pollable(deadline_ns: int) -> Pollable:
    return InstantPollable(deadline_ns)


def interfaces(version: str) -> list[HostInterface]:
    mono = HostInterface(f"wasi:clocks/monotonic-clock@{version}")
    mono.func("now", lambda cx: time.monotonic_ns())
    mono.func("resolution", lambda cx: 1)
    mono.func("subscribe-instant", lambda cx, when: _instant_pollable(when))
    mono.func("subscribe-duration", lambda cx, d: _instant_pollable(time.monotonic_ns() + d))

    def wall_now(cx: Any) -> dict[str, int]:
        ns = time.time_ns()
        return {"seconds": ns // 1_000_000_000, "nanoseconds": ns % 1_000_000_000}

    wall = HostInterface(f"wasi:clocks/wall-clock@{version}")
    wall.func("now", wall_now)
    wall.func("resolution", lambda cx: {"seconds": 0, "nanoseconds": 1000})
    return [mono, wall]
