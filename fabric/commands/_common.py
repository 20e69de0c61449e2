"""Helpers shared by the subcommands."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

from fabric.errors import UsageError

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def parse_size(text: str) -> int:
    from fabric.workload.units import parse_size as _parse

    try:
        return int(_parse(text))
    except (ValueError, TypeError) as e:
        raise UsageError(f"bad size {text!r}: {e}") from None
