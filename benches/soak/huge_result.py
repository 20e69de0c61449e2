"""Ask for a huge result: one client (through the ingress port) runs
``SELECT repeat('x', huge_row_bytes) FROM generate_series(1, huge_rows)`` on
PostgreSQL, several times dbpool's ``max_result_size`` (64 MiB by default).

Held when the answer is the ``result_too_large`` refusal and the process's
RSS, at its peak during the fault and once it settled, did not grow by more
than twice ``max_result_size`` above its level before (a server that stops
reading once the limit is crossed holds at most about one limit's worth).
``refusal_seconds`` is how long the answer took; ``rss_growth_mb`` the growth
while the query ran.
"""

from __future__ import annotations

import asyncio
import time

from benches.soak.common import FaultContext, Injection, Target, under_load
from benches.soak.load import RssSampler, rss_mb
from benches.soak.model import FaultResult
from benches.soak.rawclient import RawClient, error_code

NAME = "huge-result"
TITLE = "one client asks for a result far over the limit"

MAX_RESULT_SIZE = 64 * 1024 * 1024  # dbpool's default, announced in docs/dbpool-protocol.md
#: how far RSS may grow over its level before the fault
MEMORY_BOUND_MB = 2 * MAX_RESULT_SIZE / 2**20


async def _inject(target: Target) -> Injection:
    assert target.ingress_port is not None
    profile = target.ctx.profile
    client, status = await RawClient.connect(target.ingress_port)
    if client is None:
        return Injection(problems=[f"the client could not connect: {status}"])
    before = rss_mb() or 0.0
    sampler = RssSampler().start()
    t0 = time.monotonic()
    sql = (
        f"SELECT repeat('x', {profile.huge_row_bytes}) FROM generate_series(1, {profile.huge_rows})"
    )
    try:
        async with asyncio.timeout(300):
            reply = await client.query("pg", sql)
        answer = error_code(reply) or type(reply).__name__.lower()
    except TimeoutError:
        answer = "no answer within 300 s"
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        answer = f"disconnected ({type(exc).__name__})"
    finally:
        seconds = time.monotonic() - t0
        await client.close()
        peak = sampler.stop()
    growth = peak - before
    details: dict[str, int | float | str | bool | None] = {
        "result_bytes_asked": profile.huge_rows * profile.huge_row_bytes,
        "answer": answer,
        "refusal_seconds": round(seconds, 2),
        "rss_growth_mb": round(growth, 1),
    }
    problems: list[str] = []
    if answer != "result_too_large":
        problems.append(f"the huge query was answered {answer!r}, not result_too_large")
    return Injection(details=details, problems=problems, memory_bound_mb=MEMORY_BOUND_MB)


async def run(ctx: FaultContext) -> FaultResult:
    return await under_load(ctx, NAME, TITLE, _inject)
