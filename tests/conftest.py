"""Shared fixtures: one runtime per session, guests built once and cached.

Guests are built from the sources under ``tests/guests/`` by
``fabric.build`` (componentize-py for Python guests, WAT for tiny ones) and
cached by content hash outside the clone (``~/.cache/fabric``), so a second
run of the suite builds nothing and compiles nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from fabric.runtime import Runtime
from tests.reference import guests


@pytest.fixture(scope="session")
def runtime() -> Iterator[Runtime]:
    rt = Runtime()
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def cli_guest() -> Path:
    return guests.cli_guest()


@pytest.fixture(scope="session")
def net_wasm() -> Path:
    """The ``net`` guest (CPython sockets, asyncio, PyMySQL; tests/guests/net)."""
    return guests.net_guest()


@pytest.fixture(scope="session")
def job_guest() -> Path:
    return guests.job_guest()


@pytest.fixture(scope="session")
def cron_service_guest() -> Path:
    return guests.service_guest()


@pytest.fixture(scope="session")
def pipeline_guest() -> Path:
    return guests.pipeline_guest()


@pytest.fixture(scope="session")
def values_guest() -> Path:
    return guests.values_guest()


_LOOP_ERRORS: list[dict[str, object]] = []


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop (fabric's production loop) with an exception handler that records."""
    loop = uvloop.new_event_loop()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        _LOOP_ERRORS.append(context)
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    return loop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"uvloop": _new_loop}


@pytest.fixture(autouse=True)
def _fail_on_loop_errors() -> Iterator[None]:
    """A test fails if its event loop's exception handler was called."""
    _LOOP_ERRORS.clear()
    yield
    errors = list(_LOOP_ERRORS)
    _LOOP_ERRORS.clear()
    assert not errors, f"event loop errors: {errors}"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("FABRIC_TEST", "1")
