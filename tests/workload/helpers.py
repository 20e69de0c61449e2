"""Small helpers shared by the workload tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(predicate: Callable[[], bool], *, step: float = 0.01) -> None:
    """Poll ``predicate`` until it holds (bound the wait with ``asyncio.timeout``)."""
    for _ in iter(int, 1):  # forever
        if predicate():
            return
        await asyncio.sleep(step)
