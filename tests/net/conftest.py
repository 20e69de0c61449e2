"""Loop matrix and leak checks for the virtual network tests.

Every async test runs twice: on asyncio (debug mode) and on uvloop. A test
fails if its loop's exception handler was called.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping

import pytest
import uvloop

_LOOP_ERRORS: list[dict[str, object]] = []


def _record(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    _LOOP_ERRORS.append(context)
    loop.default_exception_handler(context)


class _DebugLoop(asyncio.SelectorEventLoop):
    """asyncio's loop, always in debug mode (the runner would switch it off)."""

    def set_debug(self, enabled: bool) -> None:
        super().set_debug(True)


def _asyncio_loop() -> asyncio.AbstractEventLoop:
    loop = _DebugLoop()
    loop.set_exception_handler(_record)
    return loop


def _uvloop_loop() -> asyncio.AbstractEventLoop:
    loop = uvloop.new_event_loop()
    loop.set_exception_handler(_record)
    return loop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": _asyncio_loop, "uvloop": _uvloop_loop}


@pytest.fixture(autouse=True)
def _net_loop_errors() -> Iterator[None]:
    _LOOP_ERRORS.clear()
    yield
    errors = list(_LOOP_ERRORS)
    _LOOP_ERRORS.clear()
    assert not errors, f"event loop errors: {errors}"
