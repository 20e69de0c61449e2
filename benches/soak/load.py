"""The load every fault runs under, and what is measured around it.

Each worker invokes the ``dbbench`` guest in ``txn`` mode over and over: a
fresh component instance borrows a connection from dbpool, begins a
transaction, inserts one row with a key no other invocation uses, and
commits. An invocation is *acknowledged* when the guest exits 0 having
printed ``ended=commit``; then its row must be in the table exactly once.
Workers alternate between the databases (PostgreSQL, MariaDB).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from benches.soak.stack import DBPOOL_PORT

__all__ = ["Invoker", "Load", "RssSampler", "rss_mb"]

#: ``invoke(args)`` runs the component once with these arguments and returns its result
#: (``{"exit_code", "stdout", "stderr"}``).
Invoker = Callable[[list[str]], Awaitable[Any]]

INVOCATION_TIMEOUT = 30.0
#: a worker whose invocation failed waits this long before the next one
FAILURE_PAUSE = 0.05


def rss_mb(pid: int | None = None) -> float | None:
    """Resident set size of ``pid`` (default: this process) in MiB, None if it is gone."""
    try:
        with open(f"/proc/{pid or os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds on a thread of its own
    (so a blocked event loop does not hide a peak)."""

    def __init__(self, pid: int | None = None, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = rss_mb(pid) or 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            value = rss_mb(self.pid)
            if value is None:
                return
            self.peak = max(self.peak, value)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(timeout=2)
        value = rss_mb(self.pid)
        if value is not None:
            self.peak = max(self.peak, value)
        return self.peak


class Load:
    """``workers`` tasks invoking one transaction each, until :meth:`stop`."""

    def __init__(
        self,
        invoke: Invoker,
        databases: Sequence[str],
        table: str,
        workers: int,
        *,
        first_id: int = 1,
    ) -> None:
        self.invoke = invoke
        self.databases = list(databases)
        self.table = table
        self.workers = workers
        self._ids = itertools.count(first_id)
        self.issued: dict[str, set[int]] = {db: set() for db in self.databases}
        self.acknowledged: dict[str, set[int]] = {db: set() for db in self.databases}
        self.failed = 0
        self.first_error: str | None = None
        #: (started, finished) monotonic times of the acknowledged invocations
        self.successes: list[tuple[float, float]] = []
        #: (started, finished, acknowledged) of every invocation
        self.records: list[tuple[float, float, bool]] = []
        #: (started, finished) of invocations the fabric refused with
        #: ShuttingDown: they never ran (a clean refusal a client can retry)
        self.refused: list[tuple[float, float]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False

    @property
    def invocations(self) -> int:
        return sum(len(ids) for ids in self.issued.values())

    @property
    def acknowledged_count(self) -> int:
        return sum(len(ids) for ids in self.acknowledged.values())

    def start(self) -> None:
        self._running = True
        self._tasks = [
            asyncio.create_task(self._worker(n), name=f"soak-load-{n}") for n in range(self.workers)
        ]

    async def stop(self) -> None:
        """Let the invocations in flight finish, start no more."""
        self._running = False
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _worker(self, n: int) -> None:
        for turn in itertools.count(n):
            if not self._running:
                return
            db = self.databases[turn % len(self.databases)]
            await self.once(db)

    async def once(self, db: str) -> bool:
        row_id = next(self._ids)
        self.issued[db].add(row_id)
        args = ["txn", str(DBPOOL_PORT), db, self.table, str(row_id), "1", "commit"]
        started = time.monotonic()
        error: str | None = None
        try:
            async with asyncio.timeout(INVOCATION_TIMEOUT):
                result = await self.invoke(args)
            if (
                isinstance(result, dict)
                and result.get("exit_code") == 0
                and "ended=commit" in str(result.get("stdout", ""))
            ):
                self.acknowledged[db].add(row_id)
                finished = time.monotonic()
                self.successes.append((started, finished))
                self.records.append((started, finished, True))
                return True
            if isinstance(result, dict):
                text = str(result.get("stdout", "")) + str(result.get("stderr", ""))
                error = f"exit {result.get('exit_code')}: {_last_line(text)}"
            else:
                error = f"unexpected result {result!r:.200}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {_last_line(str(exc))}"
        self.failed += 1
        finished = time.monotonic()
        self.records.append((started, finished, False))
        if error is not None and "ShuttingDown" in error:
            self.refused.append((started, finished))
        if self.first_error is None:
            self.first_error = error
        await asyncio.sleep(FAILURE_PAUSE)
        return False

    def recovery_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the end of the first acknowledged invocation
        that started at or after it."""
        ends = [end for start, end in self.successes if start >= moment]
        return min(ends) - moment if ends else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    interesting = [line for line in lines if line.startswith(("error=", "message=", "code="))]
    chosen = " ".join(interesting) if interesting else (lines[-1] if lines else "")
    return chosen[:300]
