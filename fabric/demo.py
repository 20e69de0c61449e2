"""``fabric demo``: pooling paying off, on this machine, in a minute.

1. Find PostgreSQL at 127.0.0.1:5432, or start a throwaway one.
2. Start a workload: the dbpool service (a pool of warm connections) and a
   componentize-py component that runs ``SELECT 1``.
3. Invoke the component many times, each invocation a fresh instance:
   borrowing a pooled connection over the virtual loopback, then connecting
   to PostgreSQL itself (through an egress rule) as a serverless function
   would.
4. Print the two side by side and write ``results.json`` and ``results.png``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from fabric.guests import DBPOOL_SERVICE, dbbench
from fabric.postgres import PostgresEndpoint, find_or_start_postgres
from fabric.stats import percentile

DBPOOL_PORT = 7000
EGRESS_NAME = "postgres.internal"


class PathResult(msgspec.Struct, frozen=True):
    name: str
    invocations: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float


class DemoResult(msgspec.Struct, frozen=True):
    postgres: str
    auth: str
    concurrency: int
    paths: list[PathResult]
    speedup_p50: float


def _pct(ordered: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted latencies; NaN when none succeeded."""
    return percentile(ordered, q) if ordered else float("nan")


async def _measure(
    name: str,
    count: int,
    concurrency: int,
    op: Callable[[], Awaitable[None]],
    advance: Callable[[], None],
) -> PathResult:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        nonlocal errors
        while not queue.empty():
            queue.get_nowait()
            t0 = time.perf_counter()
            try:
                await op()
                latencies.append((time.perf_counter() - t0) * 1000)
            except Exception:
                errors += 1
            advance()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return PathResult(
        name=name,
        invocations=len(latencies),
        errors=errors,
        p50_ms=_pct(ordered, 50),
        p90_ms=_pct(ordered, 90),
        p99_ms=_pct(ordered, 99),
        throughput=len(latencies) / wall if wall else 0.0,
    )


def _plot(result: DemoResult, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = [p.name for p in result.paths]
    for i, key in enumerate(("p50_ms", "p90_ms", "p99_ms")):
        ax.bar(
            [x + i * 0.25 for x in range(len(names))],
            [getattr(p, key) for p in result.paths],
            width=0.25,
            label=key.replace("_ms", ""),
        )
    ax.set_xticks([x + 0.25 for x in range(len(names))], names)
    ax.set_ylabel("latency per invocation (ms)")
    ax.set_title(f"SELECT 1 per component invocation (concurrency {result.concurrency})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)


async def run_demo(
    *,
    invocations: int = 300,
    direct_invocations: int = 60,
    concurrency: int = 8,
    out: Path,
    pg_port: int = 5432,
) -> DemoResult:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from fabric.workload import manifest_from_dict
    from fabric.workload.runtime import Fabric

    console = Console()
    console.print("[bold]fabric demo[/bold]: pooled database connections for wasm components")
    pg: PostgresEndpoint = await asyncio.to_thread(
        find_or_start_postgres, pg_port, database="postgres"
    )
    where = f"{pg.host}:{pg.port}"
    if pg.source == "existing":
        console.print(f"PostgreSQL: using the server at {where}")
    else:
        console.print(f"PostgreSQL: none reachable, started a throwaway server at {where}")
    auth = "password (scram-sha-256)" if pg.password else "the server's own (trust?)"
    try:
        with console.status("building the demo component (first run only, ~15-30 s)"):
            guest = await asyncio.to_thread(dbbench)
        db = {
            "kind": "postgres",
            "host": pg.host,
            "port": pg.port,
            "user": pg.user,
            "password": pg.password,
            "database": pg.database,
            "min_size": min(2, concurrency),
            "max_size": concurrency,
        }
        raw = {
            "workloads": [
                {
                    "name": "demo",
                    "services": [
                        {
                            "name": "dbpool",
                            "native": DBPOOL_SERVICE,
                            "ports": [DBPOOL_PORT],
                            "config": {"port": DBPOOL_PORT, "databases": {"pg": db}},
                        }
                    ],
                    "components": [
                        {"name": "select1", "wasm": str(guest), "concurrency": concurrency}
                    ],
                    "egress": [{"dest": EGRESS_NAME, "port": 5432, "to": f"{pg.host}:{pg.port}"}],
                }
            ]
        }
        manifest = manifest_from_dict(raw, path="<demo>", base_dir=str(Path.cwd()))
        fabric = Fabric(manifest, emit=lambda line: None)
        with console.status("starting the workload (compiling the component on first run)"):
            await fabric.start()
        wl = fabric.workloads["demo"]
        pooled_args = ["pooled", str(DBPOOL_PORT), "pg", "SELECT 1"]
        direct_args = [
            "pg-direct",
            EGRESS_NAME,
            "5432",
            pg.user,
            pg.password or "",
            pg.database,
            "SELECT 1",
        ]

        async def invoke(args: list[str]) -> None:
            result = await wl.invoke("select1", None, args)
            if result["exit_code"] != 0:
                raise RuntimeError((result["stdout"] + result["stderr"])[-300:])

        try:
            await invoke(pooled_args)  # warm up
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=console,
            ) as progress:
                t1 = progress.add_task("pooled through fabric   ", total=invocations)
                pooled = await _measure(
                    "pooled (fabric dbpool)",
                    invocations,
                    concurrency,
                    lambda: invoke(pooled_args),
                    lambda: progress.advance(t1),
                )
                t2 = progress.add_task("connect per invocation  ", total=direct_invocations)
                direct = await _measure(
                    "connect per invocation",
                    direct_invocations,
                    concurrency,
                    lambda: invoke(direct_args),
                    lambda: progress.advance(t2),
                )
        finally:
            await fabric.stop()
    finally:
        await asyncio.to_thread(pg.close)
    result = DemoResult(
        postgres=f"{where} ({pg.source})",
        auth=auth,
        concurrency=concurrency,
        paths=[direct, pooled],
        speedup_p50=direct.p50_ms / pooled.p50_ms if pooled.p50_ms else float("nan"),
    )
    _report(console, result, out)
    return result


def _report(console: Any, result: DemoResult, out: Path) -> None:
    from rich.table import Table

    table = Table(title="SELECT 1 from a fresh component instance per invocation")
    for col in ("path", "invocations", "errors", "p50 ms", "p90 ms", "p99 ms", "per second"):
        table.add_column(col, justify="right" if col != "path" else "left")
    for p in result.paths:
        table.add_row(
            p.name,
            str(p.invocations),
            str(p.errors),
            f"{p.p50_ms:.2f}",
            f"{p.p90_ms:.2f}",
            f"{p.p99_ms:.2f}",
            f"{p.throughput:.0f}",
        )
    console.print(table)
    console.print(
        f"pooled through fabric is [bold]{result.speedup_p50:.1f}x[/bold] faster at p50 "
        f"(database auth: {result.auth})."
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(msgspec.to_builtins(result), indent=2) + "\n")
    _plot(result, out / "results.png")
    console.print(f"results written to {out}/results.json and {out}/results.png")
    console.print("for the full side-by-side suite (PgBouncer, MariaDB, WAT): fabric bench")


__all__ = ["DemoResult", "run_demo"]
