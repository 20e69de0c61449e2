"""Where one pooled ``SELECT 1`` invocation spends fabric's time.

Starts a workload with the dbpool service (PostgreSQL, default trust auth at
127.0.0.1:5432, database ``test``) and its components: the smallest command
component, whose ``run`` returns at once (``tiny``: fabric's own cost of a
fresh-instance invocation), the hand-written WAT round trip (``wat``), the
WAT component using the typed sql import (``sql-wat``), the componentize-py
dbbench guest in a fresh instance per invocation (``py``) and the same guest
reusing warm instances and its dbpool connection (``py-reuse``).  For each path it runs warm-up
invocations, then ``--n`` invocations one after another under cProfile, and
prints per invocation: wall and process CPU time without the profiler,
wall time under it, Python function calls, host calls by WIT
function, and the top functions by own time and by cumulative time.

    python -m benches.profile_invocation                 # every path
    python -m benches.profile_invocation --path wat -n 500 --top 30
    python -m benches.profile_invocation --path wat --dump /tmp/prof   # keep the .pstats
    python -m benches.profile_invocation --path tiny -n 1000 --rounds 6  # CPU per round too
    python -m benches.profile_invocation --reply-before-release off --reset after-transactions
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import resource
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from fabric.build import build_wat_guest
from fabric.engine.callbacks import host_functions
from fabric.guests import dbbench
from fabric.workload import manifest_from_dict
from fabric.workload.runtime import Fabric, WorkloadRuntime

ROOT = Path(__file__).resolve().parent.parent
WAT_SELECT1 = ROOT / "tests" / "guests" / "wat" / "dbpool_select1.wat"
WAT_SQL_SELECT1 = ROOT / "tests" / "guests" / "wat" / "sql_select1.wat"
WAT_TINY = ROOT / "tests" / "guests" / "wat" / "tiny.wat"
PORT = 7000
PATHS = ("tiny", "wat", "sql-wat", "py", "py-reuse")


def _manifest(args: argparse.Namespace) -> dict[str, Any]:
    db = {
        "kind": "postgres",
        "host": args.host,
        "port": args.port,
        "user": args.user,
        "database": args.database,
        "min_size": 2,
        "max_size": 4,
        "reset": args.reset,
    }
    py = str(dbbench())
    wat = str(build_wat_guest(WAT_SELECT1))
    sql_wat = str(build_wat_guest(WAT_SQL_SELECT1))
    limits = (
        {}
        if args.reply_before_release is None
        else {"reply_before_release": args.reply_before_release == "on"}
    )
    return {
        "workloads": [
            {
                "name": "profile",
                "services": [
                    {
                        "name": "dbpool",
                        "native": "services.dbpool.service:DbPoolService",
                        "ports": [PORT],
                        "config": {
                            "port": PORT,
                            "databases": {"pg": db},
                            "limits": limits,
                        },
                    }
                ],
                "components": [
                    {"name": "tiny", "wasm": str(build_wat_guest(WAT_TINY))},
                    {"name": "wat", "wasm": wat},
                    {"name": "sql-wat", "wasm": sql_wat},
                    {"name": "py", "wasm": py},
                    {
                        "name": "py-reuse",
                        "wasm": py,
                        "reuse": {"max_invocations": 1_000_000, "pool_size": 2, "idle": "1h"},
                    },
                ],
            }
        ]
    }


def _arguments(path: str) -> list[str]:
    if path == "tiny":
        return []
    if path in ("wat", "sql-wat"):
        return [str(PORT), "pg"]
    mode = "pooled-keep" if path == "py-reuse" else "pooled"
    return [mode, str(PORT), "pg", "SELECT 1"]


class HostCallCounter:
    """Counts host calls by WIT function while installed (wraps every host function)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._saved: list[tuple[Any, Callable[..., Any]]] = []

    def install(self) -> None:
        for hf in host_functions():
            impl = hf.impl
            self._saved.append((hf, impl))
            hf.impl = self._wrap(hf.qualname, impl)

    def _wrap(self, name: str, impl: Callable[..., Any]) -> Callable[..., Any]:
        counts = self.counts

        def counted(*args: Any) -> Any:
            counts[name] += 1
            return impl(*args)

        return counted

    def remove(self) -> None:
        for hf, impl in self._saved:
            hf.impl = impl
        self._saved.clear()


async def _invoke(wl: WorkloadRuntime, path: str, args: list[str]) -> None:
    result = await wl.invoke(path, None, args)
    if result["exit_code"] != 0:
        raise RuntimeError(f"{path} failed: {result['stdout']}{result['stderr']}")


def _short(name: str) -> str:
    return name.split("/", 1)[-1].split("@", 1)[0] + "#" + name.rsplit("#", 1)[-1]


def _module(filename: str) -> str:
    """A profile entry's file as a short module label (repository-relative, or the package)."""
    root = str(ROOT) + "/"
    if filename.startswith(root):
        return filename[len(root) :]
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1]
    if filename.startswith("<") or "/" not in filename:
        return filename  # a builtin: "~" or "<frozen ...>"
    return "stdlib:" + filename.rsplit("/", 1)[1]


def by_module(stats: pstats.Stats, n: int) -> list[tuple[str, float, float]]:
    """(module, Python calls per invocation, own µs per invocation), most calls first."""
    calls: Counter[str] = Counter()
    own: Counter[str] = Counter()
    raw = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, _name), (_cc, nc, tt, _ct, _callers) in raw.items():
        key = _module(filename)
        calls[key] += nc
        own[key] += tt
    return [(k, calls[k] / n, own[k] / n * 1e6) for k, _ in calls.most_common()]


async def _timed_rounds(
    wl: WorkloadRuntime, path: str, args: list[str], n: int, rounds: int
) -> str:
    """``rounds`` rounds of ``n`` invocations without the profiler: process CPU
    and minor page faults per invocation of each round, and the median CPU."""
    cpus: list[float] = []
    faults = 0.0
    for _ in range(rounds):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        cpu = time.process_time()
        for _ in range(n):
            await _invoke(wl, path, args)
        cpus.append((time.process_time() - cpu) / n * 1e6)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n
    each = " ".join(f"{c:.0f}" for c in cpus)
    return (
        f"process CPU per invocation in {rounds} rounds of {n}: {each} µs"
        f" (median {statistics.median(cpus):.0f} µs); minor faults per invocation {faults:.1f}"
    )


async def profile_path(
    wl: WorkloadRuntime,
    path: str,
    n: int,
    warmup: int,
    top: int,
    dump: Path | None = None,
    rounds: int = 0,
) -> None:
    args = _arguments(path)
    for _ in range(warmup):
        await _invoke(wl, path, args)
    counter = HostCallCounter()
    counter.install()
    try:
        for _ in range(n):  # host calls, outside the profiler
            await _invoke(wl, path, args)
    finally:
        counter.remove()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await _invoke(wl, path, args)
    plain = (time.perf_counter() - start) / n
    plain_cpu = (time.process_time() - cpu) / n
    timed = await _timed_rounds(wl, path, args, n, rounds) if rounds else None
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    for _ in range(n):
        await _invoke(wl, path, args)
    prof.disable()
    wall = (time.perf_counter() - start) / n
    stats = pstats.Stats(prof)
    calls = sum(c[1] for c in stats.stats.values())  # type: ignore[attr-defined]
    host = sum(counter.counts.values())
    print(f"\n=== {path}: {n} invocations of {' '.join(args)}")
    print(f"wall per invocation: {plain * 1000:.3f} ms (process CPU {plain_cpu * 1000:.3f} ms)")
    if timed is not None:
        print(timed)
    print(f"wall per invocation under the profiler: {wall * 1000:.3f} ms")
    print(f"Python function calls per invocation: {calls / n:.0f}")
    print(f"host calls per invocation: {host / n:.1f}")
    for name, count in counter.counts.most_common():
        print(f"  {count / n:6.1f}  {_short(name)}")
    print("--- Python calls per invocation by module (own time under the profiler)")
    for module, module_calls, us in by_module(stats, n)[:top]:
        print(f"  {module_calls:7.1f}  {us:7.1f} µs  {module}")
    if dump is not None:  # the directory is made before the loop starts
        stats.dump_stats(str(dump / f"{path}.pstats"))
    for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).strip_dirs().sort_stats(key).print_stats(top)
        body = out.getvalue()
        print(f"--- top {top} by {title}")
        print(body[body.index("   ncalls") :].rstrip())


async def main(args: argparse.Namespace) -> None:
    if args.dump is not None:
        args.dump.mkdir(parents=True, exist_ok=True)
    manifest = manifest_from_dict(_manifest(args), path="<profile>", base_dir=str(ROOT))
    fabric = Fabric(manifest, emit=lambda line: None)
    await fabric.start()
    try:
        wl = fabric.workloads["profile"]
        for path in args.path or PATHS:
            await profile_path(wl, path, args.n, args.warmup, args.top, args.dump, args.rounds)
    finally:
        await fabric.stop()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benches.profile_invocation", description=__doc__)
    p.add_argument("--path", action="append", choices=PATHS, help="repeatable; default: all")
    p.add_argument("-n", type=int, default=200, help="profiled invocations per path")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--top", type=int, default=20)
    p.add_argument(
        "--dump", type=Path, default=None, help="write each path's profile to DIR/PATH.pstats"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="also time this many rounds of -n invocations without the profiler"
        " (process CPU and minor page faults per invocation of each round)",
    )
    p.add_argument(
        "--reset",
        choices=("always", "after-transactions"),
        default="always",
        help="the pool's session reset policy (docs/pools.md)",
    )
    p.add_argument(
        "--reply-before-release",
        choices=("on", "off"),
        default=None,
        help="dbpool writes the response while the lease is reset (docs/dbpool-protocol.md);"
        " default: the service's default (on)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5432)
    p.add_argument("--user", default="postgres")
    p.add_argument("--database", default="test")
    return p.parse_args(argv)


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parse()))
