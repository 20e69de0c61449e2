"""The guest SDK inside a real componentize-py component (CPython 3.14 in wasm),
run by the wasmtime CLI with real sockets against the running server."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from fabric.build import build_python_guest
from tests.reference.wasmtime_cli import run_guest

from .conftest import Env
from .guestsdk import GUEST_DIR

APP_DIR = Path(__file__).resolve().parent / "guest_app"


@pytest.fixture(scope="module")
def dbpool_guest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Only the SDK module goes on the guest's path, so the cached build depends on
    # nothing else that may sit in services/dbpool/guest.
    sdk = tmp_path_factory.mktemp("sdk")
    shutil.copy(GUEST_DIR / "fabric_dbpool.py", sdk / "fabric_dbpool.py")
    return build_python_guest(APP_DIR, extra_paths=[sdk])


@pytest.mark.slow
async def test_component_borrows_pooled_connections(dbpool_guest: Path, pg_env: Env) -> None:
    result = await asyncio.to_thread(
        run_guest, dbpool_guest, str(pg_env.port), pg_env.table, wall_timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.facts == {
        "columns": "n,d,day",
        "n": "42",
        "d": "Decimal:2.50",
        "day": "date:2024-02-29",
        "rolled_back": "yes",
        "count": "2",
        "error": "database_error:42601",
        "clients": "1",
        "python": "3.14",
    }
    await pg_env.settled()
    stats = pg_env.service.statistics()
    assert stats.requests == {
        "query": 4,
        "execute_many": 1,
        "begin": 2,
        "commit": 1,
        "rollback": 1,
        "stats": 1,
    }
    assert stats.errors == {"database_error": 1}
