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

from fabric.build import build_python_guest
from fabric.runtime import Runtime
from tests.guestlib import GUESTS


@pytest.fixture(scope="session")
def runtime() -> Iterator[Runtime]:
    rt = Runtime()
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def cli_guest() -> Path:
    return build_python_guest(GUESTS / "cli")


@pytest.fixture(scope="session")
def job_guest() -> Path:
    return build_python_guest(GUESTS / "cron", world="job-component", app="job")


@pytest.fixture(scope="session")
def cron_service_guest() -> Path:
    return build_python_guest(GUESTS / "cron", world="cron-service", app="service")


@pytest.fixture(scope="session")
def pipeline_guest() -> Path:
    return build_python_guest(GUESTS / "compose", world="composer", app="pipeline")


@pytest.fixture(scope="session")
def values_guest() -> Path:
    return build_python_guest(
        GUESTS / "values", world="values", wit_dir=GUESTS / "values" / "wit"
    )


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
