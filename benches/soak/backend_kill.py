"""Kill the database's backends: every server connection of the pools' logins is
terminated (``pg_terminate_backend`` on PostgreSQL, ``KILL CONNECTION`` on
MariaDB, for the suite's own login only), ``repeats`` rounds half a second apart."""

from __future__ import annotations

import asyncio

from benches.soak.common import FaultContext, Injection, Target, under_load
from benches.soak.model import FaultResult

NAME = "backend-kill"
TITLE = "terminate the pools' database backends under load"


async def _inject(target: Target) -> Injection:
    killed = 0
    for n in range(target.ctx.profile.repeats):
        if n:
            await asyncio.sleep(0.5)
        killed += await target.ctx.stack.kill_backends()
    return Injection(details={"backends_killed": killed})


async def run(ctx: FaultContext) -> FaultResult:
    return await under_load(ctx, NAME, TITLE, _inject)
