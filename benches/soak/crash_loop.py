"""Crash-loop a service: a second native service of the workload
(:mod:`benches.soak.crasher`) begins a transaction through dbpool, inserts a
row and raises, over and over, until the supervisor gives it up as a crash
loop.

Held when the crasher ends ``failed`` (not restarted forever), none of its
rows exist (each transaction was rolled back when its instance died), the
load went on, and every lease came back.
"""

from __future__ import annotations

import asyncio
import time

from benches.soak import crasher
from benches.soak.common import FAULT_ID_BASE, FaultContext, Injection, Target, under_load
from benches.soak.model import FaultResult
from benches.soak.stack import DBPOOL_PORT

NAME = "crash-loop"
TITLE = "a service of the workload crash-loops with a transaction open"

SERVICE = "crasher"
MAX_RESTARTS = 5


async def _inject(target: Target) -> Injection:
    profile = target.ctx.profile
    failed_before = target.load.failed
    crasher.arm()
    deadline = time.monotonic() + profile.crash_loop_for
    state = "?"
    restarts = 0
    while time.monotonic() < deadline:
        status = target.workload.supervisor.status(SERVICE)
        state, restarts = status.state, status.restarts
        if state == "failed":
            break
        await asyncio.sleep(0.05)
    written = crasher.written()
    must_not_exist: dict[str, set[int]] = {}
    for db, row_id in written:
        must_not_exist.setdefault(db, set()).add(row_id)
    status = target.workload.supervisor.status(SERVICE)
    details: dict[str, int | float | str | bool | None] = {
        "crasher_state": status.state,
        "crasher_restarts": status.restarts,
        "crasher_exits": status.exits,
        "rows_written_by_crashed_instances": len(written),
        "invocations_failed_meanwhile": target.load.failed - failed_before,
    }
    problems: list[str] = []
    if status.state != "failed":
        problems.append(
            f"the crash-looping service is {status.state!r} after {profile.crash_loop_for:g} s "
            f"and {restarts} restarts, not failed"
        )
    return Injection(details=details, problems=problems, must_not_exist=must_not_exist)


async def run(ctx: FaultContext) -> FaultResult:
    crasher.disarm()
    service = {
        "name": SERVICE,
        "native": "benches.soak.crasher:CrashingService",
        "config": {
            "port": DBPOOL_PORT,
            "table": ctx.stack.table_name(NAME),
            "databases": ctx.stack.databases,
            "first_id": FAULT_ID_BASE,
        },
        "restart": {
            "initial_backoff": "20ms",
            "max_backoff": "100ms",
            "max_restarts": MAX_RESTARTS,
            "window": "60s",
        },
    }
    try:
        return await under_load(ctx, NAME, TITLE, _inject, extra_services=[service])
    finally:
        crasher.disarm()
