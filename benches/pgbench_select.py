"""``pgbench-select``: ``pgbench -S`` through fabric's PostgreSQL front door, through
PgBouncer (transaction mode, scram-sha-256) and direct, side by side.

    python -m benches.pgbench_select --quick      # c = 1, 8, 64; 3 s per run
    python -m benches.pgbench_select              # c = 1, 8, 64; 10 s per run, 2 rounds
    python -m benches.pgbench_select --out DIR    # also write pgbench-select.json / .md

Every route serves the same private scram cluster (`benches.env.BenchEnv`):

* ``direct``: pgbench to PostgreSQL itself;
* ``pgbouncer-tx``: a private PgBouncer, transaction mode, ``auth_type =
  scram-sha-256`` with the role's SCRAM secret in its auth file, 20 server
  connections;
* ``fabric-ingress``: the dbpool service's front door on a workload's virtual
  port, published on a host port by an ingress rule (the way a workload serves
  it), scram-sha-256, 20 server connections; the ingress hands each connection
  to the front door as the real socket's streams (the fast path);
* ``fabric-splice``: the same, with the rule's fast path off (``direct=False``):
  every byte crosses the splice task and a virtual pipe;
* ``fabric-tcp``: the same front door listening on a host socket directly (what
  the ingress hop costs).

Each is run persistent (one connection per client) and with ``-C`` (a new
connection per transaction). Routes take turns within a round, so each sees
the same moments of a shared machine; the report gives the median tps over the
rounds and each route's ratio to PgBouncer's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from benches.env import BenchEnv, PgTarget

ROUTES = ("direct", "pgbouncer-tx", "fabric-ingress", "fabric-splice", "fabric-tcp")
_TPS = re.compile(rb"tps = ([0-9.]+)")


async def pgbench(target: PgTarget, *args: str, check: bool = True) -> bytes:
    env = {**os.environ, "PGPASSWORD": target.password}
    proc = await asyncio.create_subprocess_exec(
        "pgbench", "-h", target.host, "-p", str(target.port), "-U", target.user,
        *args, target.database,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if check and proc.returncode != 0:
        raise RuntimeError(f"pgbench {' '.join(args)} failed: {out.decode()[-800:]}")
    return out


@asynccontextmanager
async def fabric_front_door(
    pg: PgTarget, *, ingress: bool, direct: bool = True
) -> AsyncIterator[PgTarget]:
    """The dbpool service with a front door for ``pg``, on a virtual port published
    by an ingress rule (``ingress``; ``direct``: its fast path) or on a host socket."""
    from fabric.net import IngressRule, NetworkPolicy, VirtualNetwork
    from pools import DatabaseConfig
    from services.dbpool.pgdoor import PostgresFrontDoorConfig, PostgresUser
    from services.dbpool.service import DbPoolConfig, DbPoolService

    os.environ["FABRIC_BENCH_PGDOOR_PASSWORD"] = pg.password
    database = DatabaseConfig(
        kind="postgres", host=pg.host, port=pg.port, user=pg.user, password=pg.password,
        database=pg.database, min_size=4, max_size=20,
    )  # fmt: skip
    door = PostgresFrontDoorConfig(
        port=6432 if ingress else 0,
        users={pg.user: PostgresUser(password_env="FABRIC_BENCH_PGDOOR_PASSWORD")},
    )
    config = DbPoolConfig(port=7432 if ingress else 0, databases={pg.database: database},
                          postgres=door)  # fmt: skip
    if not ingress:
        async with DbPoolService(config) as service:
            assert service.postgres is not None
            yield PgTarget(host="127.0.0.1", port=service.postgres.port, user=pg.user,
                           password=pg.password, database=pg.database)  # fmt: skip
        return
    net = VirtualNetwork(
        "bench",
        NetworkPolicy(ingress=(IngressRule(port=6432, max_connections=1000, direct=direct),)),
    )

    async def start_server(handler: Any, /, *, host: str, port: int) -> Any:
        return await net.start_server(handler, port, host=host)

    service = DbPoolService(config, start_server)
    await service.start()
    try:
        (published,) = await net.start_ingress()
        yield PgTarget(host="127.0.0.1", port=published.port, user=pg.user,
                       password=pg.password, database=pg.database)  # fmt: skip
    finally:
        await service.close()
        await net.aclose()


async def run(
    levels: list[int], seconds: int, rounds: int, modes: tuple[bool, ...] = (False, True)
) -> dict[str, Any]:
    results: dict[str, dict[str, list[float]]] = {}
    async with BenchEnv() as env:
        pg = await env.postgres()
        bouncer = await env.pgbouncer()
        await pgbench(pg, "-i", "-q", "-s", "1")
        async with (
            fabric_front_door(pg, ingress=True) as via_ingress,
            fabric_front_door(pg, ingress=True, direct=False) as via_splice,
            fabric_front_door(pg, ingress=False) as via_tcp,
        ):
            targets = {
                "direct": pg,
                "pgbouncer-tx": bouncer,
                "fabric-ingress": via_ingress,
                "fabric-splice": via_splice,
                "fabric-tcp": via_tcp,
            }
            for connect in modes:
                for c in levels:
                    key = f"{'-C ' if connect else ''}c={c}"
                    for r in range(rounds):
                        order = ROUTES[r % len(ROUTES) :] + ROUTES[: r % len(ROUTES)]
                        for route in order:
                            args = ["-S", "-n", "-c", str(c), "-j", str(min(c, 2)),
                                    "-T", str(seconds)]  # fmt: skip
                            if connect:
                                args.append("-C")
                            out = await pgbench(targets[route], *args)
                            match = _TPS.search(out)
                            tps = float(match.group(1)) if match else 0.0
                            results.setdefault(key, {}).setdefault(route, []).append(tps)
                            print(f"{key:10} {route:15} {tps:10.1f} tps", file=sys.stderr)
        servers = dict(env.servers)
    table: dict[str, dict[str, Any]] = {}
    for key, by_route in results.items():
        medians = {route: statistics.median(v) for route, v in by_route.items()}
        ref = medians.get("pgbouncer-tx") or 0.0
        table[key] = {
            route: {"tps": round(tps, 1), "vs_pgbouncer": round(tps / ref, 2) if ref else None}
            for route, tps in medians.items()
        }
    return {"levels": levels, "seconds": seconds, "rounds": rounds, "servers": servers,
            "results": table}  # fmt: skip


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| run | " + " | ".join(ROUTES) + " |",
        "|---|" + "---|" * len(ROUTES),
    ]
    for key, by_route in report["results"].items():
        cells = []
        for route in ROUTES:
            r = by_route.get(route)
            if r is None:
                cells.append("-")
            elif route == "pgbouncer-tx" or r["vs_pgbouncer"] is None:
                cells.append(f"{r['tps']:,.0f}")
            else:
                cells.append(f"{r['tps']:,.0f} ({r['vs_pgbouncer']:.2f}x)")
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benches.pgbench_select")
    parser.add_argument("--quick", action="store_true", help="3 s per run, one round")
    parser.add_argument("--levels", default="1,8,64")
    parser.add_argument("--seconds", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--modes", default="persistent,connect", help="persistent, connect (-C) or both"
    )
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    seconds = args.seconds or (3 if args.quick else 10)
    rounds = args.rounds or (1 if args.quick else 2)
    import uvloop

    modes = tuple(m.strip() == "connect" for m in args.modes.split(","))
    report = uvloop.run(run(levels, seconds, rounds, modes))
    text = markdown(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "pgbench-select.json").write_text(json.dumps(report, indent=2))
        (args.out / "pgbench-select.md").write_text(text)
    print(json.dumps(report["servers"]))
    print(text)


if __name__ == "__main__":
    main()
