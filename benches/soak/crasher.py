"""A native service that crash-loops on purpose (``benches.soak.crasher:CrashingService``).

Until :func:`arm` is called it waits; then every instance borrows a dbpool
connection over the workload's loopback, begins a transaction, inserts one
row (ids from ``first_id`` on) and raises, so its transaction is left open by
a service that dies.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from services.dbpool.client import connect

__all__ = ["CrashingService", "arm", "disarm", "written"]

_armed = asyncio.Event()
_written: list[tuple[str, int]] = []
_counter = itertools.count()


def arm() -> None:
    _armed.set()


def disarm() -> None:
    """Back to waiting (a fresh event: the next run may use another event loop)."""
    global _armed
    _armed = asyncio.Event()
    _written.clear()


def written() -> list[tuple[str, int]]:
    """``(db, id)`` of every row a crashing instance wrote inside its transaction."""
    return list(_written)


class CrashingService:
    def __init__(self, config: dict[str, Any]) -> None:
        self.port = int(config["port"])
        self.table = str(config["table"])
        self.databases = [str(db) for db in config["databases"]]
        self.first_id = int(config["first_id"])

    async def serve(self, ctx: Any) -> None:
        await _armed.wait()
        n = next(_counter)
        db = self.databases[n % len(self.databases)]
        row_id = self.first_id + n
        client = await connect(self.port, open_connection=ctx.network.open_connection, timeout=10)
        await client.begin(db)
        await client.execute(
            db, f"INSERT INTO {self.table} (id, name) VALUES ({row_id}, 'crasher')"
        )
        _written.append((db, row_id))
        raise RuntimeError(f"crashing on purpose with a transaction open (row {row_id})")
