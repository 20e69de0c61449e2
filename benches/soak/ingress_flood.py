"""Flood ingress with idle clients: ``flood_clients`` clients connect to the dbpool
port published through the workload's ingress rule, complete the hello and then
say nothing; for ``flood_hold`` seconds more, while the load runs, the flood
keeps trying to add clients (as a hostile client would), so whatever room
frees up is contested. Then every flood client goes away.

Held when the workload's own invocations keep reaching dbpool through the
flood (some are acknowledged and none fails while it is held) and every
client beyond what the fabric can take gets a refusal instead of a silent
close.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from benches.soak.common import FaultContext, Injection, Target, under_load
from benches.soak.model import FaultResult
from benches.soak.rawclient import RawClient

NAME = "ingress-flood"
TITLE = "idle clients flood the ingress port"

_CONNECT_TIMEOUT = 10.0
#: connection attempts kept going at once while the flood is held
_PERSISTENT = 4


async def _connect(port: int) -> tuple[RawClient | None, str]:
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            return await RawClient.connect(port)
    except TimeoutError:
        return None, "no answer"


async def _inject(target: Target) -> Injection:
    assert target.ingress_port is not None
    profile = target.ctx.profile
    load = target.load
    clients: list[RawClient] = []
    statuses: Counter[str] = Counter()
    try:
        # In batches, so the workload's own sockets compete with the flood as it grows.
        batch = 50
        for start in range(0, profile.flood_clients, batch):
            size = min(batch, profile.flood_clients - start)
            got = await asyncio.gather(*(_connect(target.ingress_port) for _ in range(size)))
            for client, status in got:
                statuses[status] += 1
                if client is not None:
                    clients.append(client)
        failed_before = load.failed
        acked_before = load.acknowledged_count
        deadline = time.monotonic() + profile.flood_hold

        async def keep_flooding() -> None:
            while time.monotonic() < deadline:
                client, status = await _connect(target.ingress_port or 0)
                statuses[status] += 1
                if client is not None:
                    clients.append(client)
                else:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(keep_flooding() for _ in range(_PERSISTENT)))
        failed_during = load.failed - failed_before
        acked_during = load.acknowledged_count - acked_before
        # One more client when the flood is at its height: what does it get?
        _last, last_status = await _connect(target.ingress_port)
        if _last is not None:
            clients.append(_last)
    finally:
        for client in clients:
            client.abort()
    lifted = time.monotonic()
    details: dict[str, int | float | str | bool | None] = {
        "attempts": sum(statuses.values()),
        "accepted": statuses["ok"],
        "refused_too_many_clients": statuses["too_many_clients"],
        "closed_silently": statuses["closed"] + statuses["no answer"],
        "connect_errors": sum(n for s, n in statuses.items() if s.startswith("error")),
        "one_more_client": last_status,
        "invocations_failed_during_flood": failed_during,
        "invocations_acked_during_flood": acked_during,
    }
    problems: list[str] = []
    if failed_during or not acked_during:
        problems.append(
            f"while {statuses['ok']} idle clients were connected, {failed_during} invocations "
            f"failed and {acked_during} were acknowledged (the workload could not reach its "
            "own dbpool)"
        )
    silent = statuses["closed"] + statuses["no answer"] + details_int(details, "connect_errors")
    if last_status != "ok" and last_status != "too_many_clients":
        silent += 1
    if silent:
        problems.append(
            f"{int(silent)} flood clients were closed or left unanswered without the "
            "documented too_many_clients refusal"
        )
    return Injection(details=details, problems=problems, lifted_at=lifted)


def details_int(details: dict[str, int | float | str | bool | None], key: str) -> int:
    value = details.get(key)
    return value if isinstance(value, int) else 0


async def run(ctx: FaultContext) -> FaultResult:
    return await under_load(ctx, NAME, TITLE, _inject)
