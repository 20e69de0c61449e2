"""Drop clients mid-transaction: raw dbpool clients connect through the ingress
port, ``begin``, insert a row, see it acknowledged, and vanish (TCP reset).

Held when none of those rows exist afterwards (the server rolled every one of
them back), and every lease came back."""

from __future__ import annotations

import asyncio

from benches.soak.common import (
    FAULT_ID_BASE,
    FaultContext,
    Injection,
    Target,
    under_load,
    wait_until,
)
from benches.soak.model import FaultResult
from benches.soak.rawclient import RawClient, error_code
from benches.soak.stack import dbpool_stats

NAME = "client-drop"
TITLE = "clients vanish mid-transaction"

SETTLE_SECONDS = 5.0


def _abandoned(target: Target) -> int:
    stats = dbpool_stats(target.workload) or {}
    return int(stats.get("transactions_abandoned", 0))


async def _one(target: Target, db: str, row_id: int) -> str:
    assert target.ingress_port is not None
    client, status = await RawClient.connect(target.ingress_port)
    if client is None:
        return f"hello: {status}"
    try:
        begun = await client.begin(db)
        if error_code(begun):
            return f"begin: {error_code(begun)}"
        written = await client.query(
            db, f"INSERT INTO {target.table} (id, name) VALUES ({row_id}, 'dropped')"
        )
        if error_code(written):
            return f"insert: {error_code(written)}"
        return "ok"
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        return f"{type(exc).__name__}"
    finally:
        client.abort()


async def _inject(target: Target) -> Injection:
    before = _abandoned(target)
    dbs = target.load.databases
    ids = {db: set[int]() for db in dbs}
    count = target.ctx.profile.dropped_clients
    jobs = []
    for n in range(count):
        db = dbs[n % len(dbs)]
        row_id = FAULT_ID_BASE + n
        ids[db].add(row_id)
        jobs.append(_one(target, db, row_id))
    outcomes = await asyncio.gather(*jobs)
    written = sum(1 for o in outcomes if o == "ok")
    # The server learns of each reset on its own time: give it a moment to roll back.
    await wait_until(lambda: _abandoned(target) - before >= written, SETTLE_SECONDS)
    details: dict[str, int | float | str | bool | None] = {
        "clients_dropped": count,
        "rows_written_then_dropped": written,
        "transactions_abandoned": _abandoned(target) - before,
    }
    others = sorted({o for o in outcomes if o != "ok"})
    if others:
        details["client_errors"] = ", ".join(others)[:300]
    return Injection(details=details, must_not_exist=ids)


async def run(ctx: FaultContext) -> FaultResult:
    return await under_load(ctx, NAME, TITLE, _inject)
