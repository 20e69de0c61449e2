"""Fixtures for the workload tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[[str], Path]:
    """Write TOML text to a fresh manifest file and return its path."""
    counter = iter(range(1_000_000))

    def write(text: str) -> Path:
        path = tmp_path / f"manifest{next(counter)}.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write
