"""Stall a reader: one client (through the ingress port) pipelines
``stall_requests`` queries of ``stall_reply_bytes`` each and never reads a
reply; after a few seconds it goes away.

Held when the process's RSS, at its peak during the fault and once it
settled, grew by less than twice ``max_result_size`` (a server with
backpressure in bytes holds a bounded amount for a client that does not
read), and the load went on meanwhile: no invocation failed while the one
client stalled. ``rss_growth_mb`` is the growth while the client was
connected, ``rss_retained_mb`` one second after it left.
"""

from __future__ import annotations

import asyncio
import contextlib

from benches.soak.common import FaultContext, Injection, Target, under_load
from benches.soak.huge_result import MEMORY_BOUND_MB
from benches.soak.load import RssSampler, rss_mb
from benches.soak.model import FaultResult
from benches.soak.rawclient import RawClient
from benches.soak.stack import dbpool_stats
from services.dbpool.messages import Query

NAME = "stalled-reader"
TITLE = "a client pipelines requests and never reads"

HOLD_SECONDS = 3.0


async def _inject(target: Target) -> Injection:
    assert target.ingress_port is not None
    profile = target.ctx.profile
    client, status = await RawClient.connect(target.ingress_port)
    if client is None:
        return Injection(problems=[f"the client could not connect: {status}"])
    before = rss_mb() or 0.0
    failed_before = target.load.failed
    sampler = RssSampler().start()
    sql = f"SELECT repeat('x', {profile.stall_reply_bytes})"
    sent = 0
    try:
        for _ in range(profile.stall_requests):
            client.send(Query(id=client.new_id(), db="pg", sql=sql))
            sent += 1
            if client.writer.transport.get_write_buffer_size() > 4 * 2**20:
                # The server stopped reading (backpressure): stop adding, keep what is queued.
                break
        # Let the server work through what it read; never read a byte of the replies.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HOLD_SECONDS):
                await client.writer.drain()
        await asyncio.sleep(HOLD_SECONDS)
        stats = dbpool_stats(target.workload) or {}
        in_flight = int(stats.get("requests_in_flight", 0))
    finally:
        client.abort()
        peak = sampler.stop()
    await asyncio.sleep(1.0)
    after = rss_mb() or 0.0
    growth, retained = peak - before, after - before
    failed = target.load.failed - failed_before
    details: dict[str, int | float | str | bool | None] = {
        "requests_sent": sent,
        "reply_bytes_pending": sent * profile.stall_reply_bytes,
        "requests_in_flight_seen": in_flight,
        "rss_growth_mb": round(growth, 1),
        "rss_retained_mb": round(retained, 1),
        "invocations_failed_meanwhile": failed,
    }
    problems: list[str] = []
    if failed:
        problems.append(f"{failed} invocations failed while one client stalled")
    return Injection(details=details, problems=problems, memory_bound_mb=MEMORY_BOUND_MB)


async def run(ctx: FaultContext) -> FaultResult:
    return await under_load(ctx, NAME, TITLE, _inject)
