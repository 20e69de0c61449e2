"""``fabric demo``: pooling paying off, on this machine, in a minute.

1. Start a throwaway PostgreSQL with password (scram-sha-256) authentication,
   as any production server has (``initdb``, or the ``pgserver`` package);
   ``--pg-port`` measures an existing server instead, with its own auth.
2. Start a workload: the dbpool service (a pool of warm connections) and a
   componentize-py component that runs ``SELECT 1``.
3. Invoke the component on every path: connecting to PostgreSQL itself
   (through an egress rule) as a serverless function would, each invocation
   a fresh instance; borrowing a pooled connection over the virtual loopback
   from a fresh instance; from a reused (warm) instance that keeps its
   dbpool connection open between invocations (``reuse`` in the manifest);
   and the same two through the typed ``fabric:dbpool/sql`` import instead
   of a socket.
   Latency is measured one invocation at a time (concurrency 1), throughput
   with ``--concurrency`` in flight, separately: on a machine with few cores,
   queueing at high concurrency would hide the per-invocation cost.
4. Print the paths side by side and write ``results.json`` and ``results.png``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from fabric.guests import DBPOOL_SERVICE, dbbench, dbbench_sql
from fabric.postgres import PostgresEndpoint, find_or_start_postgres
from fabric.stats import percentile

DBPOOL_PORT = 7000
EGRESS_NAME = "postgres.internal"
ROLE = "demo"


class PathResult(msgspec.Struct, frozen=True):
    """One path: latency one at a time, and throughput with ``concurrency`` in flight."""

    name: str
    invocations: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float
    concurrency: int


class DemoResult(msgspec.Struct, frozen=True):
    postgres: str
    auth: str
    concurrency: int
    paths: list[PathResult]
    speedup_p50: float
    """p50 at concurrency 1: connect per invocation over the best pooled path."""


def _pct(ordered: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted latencies; NaN when none succeeded."""
    return percentile(ordered, q) if ordered else float("nan")


class _Run(msgspec.Struct):
    latencies: list[float]
    errors: int
    wall: float


async def _drive(
    count: int, concurrency: int, op: Callable[[], Awaitable[None]], advance: Callable[[], None]
) -> _Run:
    run = _Run(latencies=[], errors=0, wall=0.0)
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            try:
                await op()
                run.latencies.append((time.perf_counter() - t0) * 1000)
            except Exception:
                run.errors += 1
            advance()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.wall = time.perf_counter() - start
    return run


async def _measure(
    name: str,
    count: int,
    concurrency: int,
    op: Callable[[], Awaitable[None]],
    advance: Callable[[], None],
) -> PathResult:
    """``count`` invocations one at a time (latency), then ``count`` with ``concurrency``."""
    serial = await _drive(count, 1, op, advance)
    loaded = await _drive(count, concurrency, op, advance)
    ordered = sorted(serial.latencies)
    return PathResult(
        name=name,
        invocations=len(serial.latencies) + len(loaded.latencies),
        errors=serial.errors + loaded.errors,
        p50_ms=_pct(ordered, 50),
        p90_ms=_pct(ordered, 90),
        p99_ms=_pct(ordered, 99),
        throughput=len(loaded.latencies) / loaded.wall if loaded.wall else 0.0,
        concurrency=concurrency,
    )


def _plot(result: DemoResult, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, thr) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = [textwrap.fill(p.name, 13) for p in result.paths]
    for i, key in enumerate(("p50_ms", "p90_ms", "p99_ms")):
        lat.bar(
            [x + i * 0.25 for x in range(len(names))],
            [getattr(p, key) for p in result.paths],
            width=0.25,
            label=key.replace("_ms", ""),
        )
    lat.set_xticks([x + 0.25 for x in range(len(names))], names, fontsize=8)
    lat.set_ylabel("ms per invocation")
    lat.set_title("latency, one invocation at a time")
    lat.legend()
    thr.bar(range(len(names)), [p.throughput for p in result.paths], color="tab:green")
    thr.set_xticks(range(len(names)), names, fontsize=8)
    thr.set_ylabel("invocations per second")
    thr.set_title(f"throughput, {result.concurrency} in flight")
    fig.suptitle(f"SELECT 1 from a component (PostgreSQL auth: {result.auth})")
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)


class _Path(msgspec.Struct, frozen=True):
    name: str
    component: str
    args: list[str]
    count: int


async def run_demo(
    *,
    invocations: int = 300,
    direct_invocations: int = 60,
    concurrency: int = 8,
    out: Path,
    pg_port: int | None = None,
) -> DemoResult:
    """Run every path; ``pg_port`` measures the server there (when one answers)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from fabric.postgres import free_port
    from fabric.workload import manifest_from_dict
    from fabric.workload.runtime import Fabric

    console = Console()
    console.print("[bold]fabric demo[/bold]: pooled database connections for wasm components")
    pg: PostgresEndpoint = await asyncio.to_thread(
        find_or_start_postgres, pg_port or free_port(), database="postgres"
    )
    where = f"{pg.host}:{pg.port}"
    if pg.source == "existing":
        console.print(f"PostgreSQL: using the server at {where} (its own authentication)")
        auth = "the server's own"
    else:
        console.print(f"PostgreSQL: started a throwaway server at {where} (scram-sha-256)")
        auth = "password (scram-sha-256)"
    try:
        with console.status("building the demo components (first run only, ~30-60 s)"):
            guest = await asyncio.to_thread(dbbench)
            typed = await asyncio.to_thread(dbbench_sql)
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
        warm = {"pool_size": concurrency, "max_invocations": 10_000}
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
                        # fresh instances, and warm ones each keeping its connection open;
                        # "typed" is the same source built with the fabric:dbpool/sql import
                        {
                            "name": name + suffix,
                            "wasm": str(wasm),
                            "concurrency": concurrency,
                            **extra,
                        }
                        for name, wasm in (("select1", guest), ("typed", typed))
                        for suffix, extra in (("", {}), ("-warm", {"reuse": warm}))
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
        direct_args = [
            "pg-direct", EGRESS_NAME, "5432", pg.user, pg.password or "", pg.database, "SELECT 1",
        ]  # fmt: skip
        query = [str(DBPOOL_PORT), "pg", "SELECT 1"]
        paths = [
            _Path(
                name="connect per invocation",
                component="select1",
                args=direct_args,
                count=direct_invocations,
            ),
            *(
                _Path(
                    name=f"{way}, {kind} instance",
                    component=component,
                    args=[mode, *query],
                    count=invocations,
                )
                for way, base in (("pooled", "select1"), ("typed import", "typed"))
                for kind, component, mode in (
                    ("fresh", base, "pooled"),
                    ("reused", f"{base}-warm", "pooled-keep"),
                )
            ),
        ]

        def invoker(path: _Path) -> Callable[[], Awaitable[None]]:
            async def invoke() -> None:
                result = await wl.invoke(path.component, None, path.args)
                if result["exit_code"] != 0:
                    raise RuntimeError((result["stdout"] + result["stderr"])[-300:])

            return invoke

        results: list[PathResult] = []
        try:
            for path in paths:
                await invoker(path)()  # warm up (and fail early with the guest's message)
            with Progress(
                TextColumn("{task.description:<26}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=console,
            ) as progress:
                for path in paths:
                    task = progress.add_task(path.name, total=2 * path.count)
                    results.append(
                        await _measure(
                            path.name,
                            path.count,
                            concurrency,
                            invoker(path),
                            functools.partial(progress.advance, task),
                        )
                    )
        finally:
            await fabric.stop()
    finally:
        await asyncio.to_thread(pg.close)
    direct, pooled = results[0], results[1:]
    best = min((p.p50_ms for p in pooled), default=float("nan"))
    result = DemoResult(
        postgres=f"{where} ({pg.source})",
        auth=auth,
        concurrency=concurrency,
        paths=results,
        speedup_p50=direct.p50_ms / best if best else float("nan"),
    )
    _report(console, result, out)
    return result


def _report(console: Any, result: DemoResult, out: Path) -> None:
    from rich.table import Table

    table = Table(
        title="SELECT 1 from a component, per invocation",
        caption=f"latency: one invocation at a time; throughput: {result.concurrency} in flight",
    )
    table.add_column("path", no_wrap=True)
    for col in ("p50 ms", "p90 ms", "p99 ms", "per s", "errors"):
        table.add_column(col, justify="right", no_wrap=True)
    direct = result.paths[0]
    for p in result.paths:
        table.add_row(
            p.name,
            f"{p.p50_ms:.2f}",
            f"{p.p90_ms:.2f}",
            f"{p.p99_ms:.2f}",
            f"{p.throughput:.0f}",
            str(p.errors),
        )
    console.print(table)
    console.print(f"p50 against connecting per invocation (database auth: {result.auth}):")
    for p in result.paths[1:]:
        ratio = direct.p50_ms / p.p50_ms if p.p50_ms else float("nan")
        console.print(f"  {p.name}: [bold]{ratio:.1f}x[/bold] faster")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(msgspec.to_builtins(result), indent=2) + "\n")
    _plot(result, out / "results.png")
    console.print(f"results written to {out}/results.json and {out}/results.png")
    console.print("for the full side-by-side suite (PgBouncer, MariaDB, WAT): ./dev bench")


__all__ = ["DemoResult", "run_demo"]
