"""Session fixtures: the test guests, built once (and cached across sessions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reference import guests


@pytest.fixture(scope="session")
def cli_wasm() -> Path:
    return guests.cli_guest()


@pytest.fixture(scope="session")
def net_wasm() -> Path:
    return guests.net_guest()


@pytest.fixture(scope="session")
def job_wasm() -> Path:
    return guests.job_guest()
