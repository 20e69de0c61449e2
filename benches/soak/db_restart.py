"""Restart the database: PostgreSQL (the private cluster) is restarted with a fast
shutdown while invocations are committing, ``repeats`` times in a row."""

from __future__ import annotations

import asyncio

from benches.soak.common import FaultContext, Injection, Target, under_load
from benches.soak.model import FaultResult

NAME = "db-restart"
TITLE = "restart PostgreSQL under load"


async def _inject(target: Target) -> Injection:
    restarts = 0
    seconds = 0.0
    for n in range(target.ctx.profile.repeats):
        if n:
            await asyncio.sleep(1.0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await target.ctx.stack.restart_postgres()
        seconds = max(seconds, loop.time() - t0)
        restarts += 1
    return Injection(details={"restarts": restarts, "restart_seconds_max": round(seconds, 2)})


async def run(ctx: FaultContext) -> FaultResult:
    return await under_load(ctx, NAME, TITLE, _inject)
