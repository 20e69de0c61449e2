"""Stall a reader: one client (through the ingress port) pipelines
``stall_requests`` queries of ``stall_reply_bytes`` each and never reads a
reply; after a few seconds it goes away.

Held when the process's peak RSS grew by less than twice ``max_result_size``
(dbpool reads at most ``max_in_flight`` requests ahead, so a server with
backpressure holds a bounded number of replies for a client that does not
read) and, once the client is gone, RSS returns within that bound of where
it started (``rss_retained_mb``).
"""

from __future__ import annotations

import asyncio
import contextlib

from benches.soak.common import FaultContext, Injection, Target, under_load
from benches.soak.huge_result import MAX_RESULT_SIZE
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
    bound = 2 * MAX_RESULT_SIZE / 2**20
    details: dict[str, int | float | str | bool | None] = {
        "requests_sent": sent,
        "reply_bytes_pending": sent * profile.stall_reply_bytes,
        "requests_in_flight_seen": in_flight,
        "rss_growth_mb": round(growth, 1),
        "rss_retained_mb": round(retained, 1),
    }
    problems: list[str] = []
    if growth > bound:
        problems.append(
            f"a client that does not read grew the process by {growth:,.0f} MiB: "
            "replies are buffered without bound"
        )
    if retained > bound:
        problems.append(f"{retained:,.0f} MiB still held after the client left")
    return Injection(details=details, problems=problems)


async def run(ctx: FaultContext) -> FaultResult:
    return await under_load(ctx, NAME, TITLE, _inject)
