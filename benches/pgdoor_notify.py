"""``pgdoor-notify``: LISTEN/NOTIFY through fabric's PostgreSQL front door and
directly, side by side.

    python -m benches.pgdoor_notify --quick     # 8 listeners, 2,000 notifications, 1 round
    python -m benches.pgdoor_notify             # 1, 8, 64 listeners, 3 rounds
    python -m benches.pgdoor_notify --out DIR   # also write pgdoor-notify.json / .md

K asyncpg clients ``add_listener`` on one channel, through the front door
(``fabric-ingress``: the dbpool service's front door on a workload's virtual
port published by an ingress rule) or straight to PostgreSQL (``direct``: each
listener is a PostgreSQL session of its own, PostgreSQL fans out). A direct
connection then

* ``burst``: commits N notifications in one statement; measured: the time
  until every listener has all N, as notifications delivered per second
  (K x N / time);
* ``latency``: sends 200 NOTIFYs one after another, each carrying its send
  time; measured: p50 and p99 of send-to-receive over every listener.

The listeners, the front door and the sender share one process and event loop
(uvloop), so ``fabric-ingress`` pays for the clients' CPU too; ``direct`` has
PostgreSQL's backends do the fan-out. Routes take turns within a round; the
report gives medians over rounds and fabric's ratio to direct.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from benches.env import BenchEnv, PgTarget
from benches.pgbench_select import fabric_front_door

ROUTES = ("direct", "fabric-ingress")
_LATENCY_SENDS = 200


async def _connect(target: PgTarget) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=target.host, port=target.port, user=target.user,
        password=target.password, database=target.database,
    )  # fmt: skip


async def _listeners(target: PgTarget, k: int, channel: str, sink: Any) -> list[Any]:
    conns = [await _connect(target) for _ in range(k)]
    for conn in conns:
        await conn.add_listener(channel, sink)
    return conns


async def burst(target: PgTarget, sender: asyncpg.Connection, k: int, n: int) -> float:
    """Notifications delivered per second, K listeners x N notifications."""
    channel = f"bench_{uuid.uuid4().hex[:8]}"
    got = 0
    done = asyncio.Event()

    def sink(*_: Any) -> None:
        nonlocal got
        got += 1
        if got == k * n:
            done.set()

    conns = await _listeners(target, k, channel, sink)
    try:
        start = time.perf_counter()
        await sender.execute(
            "SELECT count(pg_notify($1, g::text)) FROM generate_series(1, $2::int) g", channel, n
        )
        await asyncio.wait_for(done.wait(), 120)
        return k * n / (time.perf_counter() - start)
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def latency(target: PgTarget, sender: asyncpg.Connection, k: int) -> tuple[float, float]:
    """p50, p99 of send-to-receive in ms."""
    channel = f"bench_{uuid.uuid4().hex[:8]}"
    samples: list[float] = []
    waiting: dict[str, int] = {}
    arrived = asyncio.Event()

    def sink(conn: Any, pid: int, chan: str, payload: str) -> None:
        samples.append(time.perf_counter() - float(payload))
        waiting[payload] -= 1
        if not waiting[payload]:
            arrived.set()

    conns = await _listeners(target, k, channel, sink)
    try:
        for _ in range(_LATENCY_SENDS):
            arrived.clear()
            payload = repr(time.perf_counter())
            waiting[payload] = k
            await sender.execute("SELECT pg_notify($1, $2)", channel, payload)
            await asyncio.wait_for(arrived.wait(), 30)
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return statistics.median(samples) * 1000, p99 * 1000


async def run(levels: list[int], n: int, rounds: int) -> dict[str, Any]:
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    async with BenchEnv() as env:
        pg = await env.postgres()
        async with fabric_front_door(pg, ingress=True) as via_ingress:
            targets = {"direct": pg, "fabric-ingress": via_ingress}
            sender = await _connect(pg)
            try:
                for k in levels:
                    key = f"k={k}"
                    for r in range(rounds):
                        order = ROUTES[r % 2 :] + ROUTES[: r % 2]
                        for route in order:
                            rate = await burst(targets[route], sender, k, n)
                            p50, p99 = await latency(targets[route], sender, k)
                            cell = results.setdefault(key, {}).setdefault(route, {})
                            cell.setdefault("per_s", []).append(rate)
                            cell.setdefault("p50_ms", []).append(p50)
                            cell.setdefault("p99_ms", []).append(p99)
                            print(f"{key:6} {route:15} {rate:10.0f}/s p50 {p50:.2f} ms "
                                  f"p99 {p99:.2f} ms", file=sys.stderr)  # fmt: skip
            finally:
                await sender.close()
        servers = dict(env.servers)
    table: dict[str, dict[str, Any]] = {}
    for key, by_route in results.items():
        med = {
            route: {m: round(statistics.median(v), 2) for m, v in cell.items()}
            for route, cell in by_route.items()
        }
        ref = med["direct"]["per_s"]
        med["fabric-ingress"]["per_s_vs_direct"] = round(med["fabric-ingress"]["per_s"] / ref, 2)
        table[key] = med
    return {"levels": levels, "notifications": n, "rounds": rounds, "servers": servers,
            "results": table}  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| listeners | direct /s | fabric /s (x direct) | direct p50 / p99 ms "
        "| fabric p50 / p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, med in report["results"].items():
        d, f = med["direct"], med["fabric-ingress"]
        lines.append(
            f"| {key[2:]} | {d['per_s']:,.0f} | {f['per_s']:,.0f} ({f['per_s_vs_direct']:.2f}x) "
            f"| {d['p50_ms']:.2f} / {d['p99_ms']:.2f} | {f['p50_ms']:.2f} / {f['p99_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benches.pgdoor_notify")
    parser.add_argument("--quick", action="store_true", help="8 listeners, one round")
    parser.add_argument("--levels", help="listener counts, default 1,8,64")
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    levels = [int(x) for x in (args.levels or ("8" if args.quick else "1,8,64")).split(",")]
    rounds = args.rounds or (1 if args.quick else 3)
    import uvloop

    report = uvloop.run(run(levels, args.notifications, rounds))
    text = markdown(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "pgdoor-notify.json").write_text(json.dumps(report, indent=2))
        (args.out / "pgdoor-notify.md").write_text(text)
    print(json.dumps(report["servers"]))
    print(text)


if __name__ == "__main__":
    main()
