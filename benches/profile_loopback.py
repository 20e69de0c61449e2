"""Where a guest-to-guest exchange over the virtual loopback spends fabric's time.

Starts a workload with the net test guest (``tests/guests/net``) as an echo
service and as a client component, then profiles two exchanges, both sides
(the service's store and the client's) counted together:

* ``rtt``: one client invocation doing ``--rounds`` one-byte round trips;
* ``bulk``: one client invocation sending ``--bulk`` bytes, reading the echo
  back.

For each it prints the client's own timing (``elapsed_us``), host calls by
WIT function per round trip (rtt) or per 64 KiB moved (bulk), Python
function calls, and the top functions by own and cumulative time::

    python -m benches.profile_loopback                   # rtt and bulk
    python -m benches.profile_loopback --path rtt --rounds 5000 --top 30
    python -m benches.profile_loopback --no-profile      # timings and counts only
    python -m benches.profile_loopback --no-profile --clients 8   # 8 concurrent clients
    python -m benches.profile_loopback --no-profile --breakdown   # time per host-call step
    python -m benches.profile_loopback --path bulk --fast-bytes   # both guests fast_bytes

``--breakdown`` (no cProfile) times, per unit, the loop thread's CPU and
each host function's steps: its parameters' lifts, its implementation and
its result's lowering, plus the continuations of async calls (``resume``).
Each timed step costs a wrapper and two clock reads: the loop thread's CPU
comes out ~20% above the unwrapped run's, and each part a bit above its own.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from benches.fabric_net import net_guest
from benches.profile_invocation import HostCallCounter
from fabric.engine.callbacks import host_functions
from fabric.engine.store import Store
from fabric.workload import manifest_from_dict
from fabric.workload.runtime import Fabric, WorkloadRuntime

ROOT = Path(__file__).resolve().parent.parent
PORT = 7
PATHS = ("rtt", "bulk")


def _manifest(guest: Path, fast_bytes: bool = False) -> dict[str, Any]:
    return {
        "workloads": [
            {
                "name": "profile",
                "services": [
                    {
                        "name": "echo",
                        "wasm": str(guest),
                        "args": ["echo-server", str(PORT)],
                        "ports": [PORT],
                        "fast_bytes": fast_bytes,
                    }
                ],
                "components": [
                    {
                        "name": "client",
                        "wasm": str(guest),
                        "concurrency": 64,
                        "fast_bytes": fast_bytes,
                    }
                ],
            }
        ]
    }


def _arguments(path: str, args: argparse.Namespace) -> list[str]:
    if path == "rtt":
        return ["rtt", "127.0.0.1", str(PORT), str(args.rounds)]
    return ["bulk-send", str(PORT), str(args.bulk), "127.0.0.1"]


async def _invoke(wl: WorkloadRuntime, argv: list[str]) -> int:
    """Run the client once; its own timing of the exchange, in microseconds."""
    return await _one(wl, argv)


async def _timed(wl: WorkloadRuntime, argv: list[str], clients: int = 1) -> tuple[int, float]:
    """The client's own timing (us, the slowest of ``clients`` concurrent
    runs) and the process CPU time of the invocations per client (us)."""
    cpu = time.process_time()
    elapsed = await asyncio.gather(*(_one(wl, argv) for _ in range(clients)))
    cpu = (time.process_time() - cpu) * 1e6 / clients
    return max(elapsed), cpu


async def _one(wl: WorkloadRuntime, argv: list[str]) -> int:
    result = await wl.invoke("client", None, argv)
    if result["exit_code"] != 0:
        raise RuntimeError(f"client failed: {result['stdout']}{result['stderr']}")
    for line in result["stdout"].splitlines():
        key, _, value = line.partition("=")
        if key == "elapsed_us":
            return int(value)
    raise RuntimeError(f"client printed no elapsed_us: {result['stdout']}")


class StepTimer:
    """Times host-call steps while installed: lifts, implementation and lowering
    of every host function already bound, and async continuations."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []

    def _wrap(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        ns, calls, clock = self.ns, self.calls, time.perf_counter_ns
        ns.setdefault(key, 0)
        calls.setdefault(key, 0)

        def timed(*args: Any) -> Any:
            start = clock()
            try:
                return fn(*args)
            finally:
                ns[key] += clock() - start
                calls[key] += 1

        return timed

    def install(self) -> None:
        for hf in host_functions():
            if hf.lifts is None:
                continue  # never called yet: nothing bound to wrap
            name = _short(hf.qualname)
            saved = (hf, hf.impl, hf.lifts, hf.lower)
            hf.impl = self._wrap(f"{name} impl", hf.impl)
            hf.lifts = tuple(self._wrap(f"{name} lift", lift) for lift in hf.lifts)
            if hf.lower is not None:
                hf.lower = self._wrap(f"{name} lower", hf.lower)
            self._undo.append(lambda s=saved: _restore(*s))
        resume = Store.resume
        Store.resume = self._wrap("(async continuations)", resume)  # type: ignore[method-assign]
        self._undo.append(lambda: setattr(Store, "resume", resume))

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()


def _restore(hf: Any, impl: Any, lifts: Any, lower: Any) -> None:
    hf.impl, hf.lifts, hf.lower = impl, lifts, lower


async def breakdown(wl: WorkloadRuntime, argv: list[str], units: int, unit: str) -> None:
    timer = StepTimer()
    timer.install()
    try:
        thread = time.thread_time_ns()
        await _invoke(wl, argv)
        thread = time.thread_time_ns() - thread
    finally:
        timer.remove()
    print(f"--- breakdown per {unit} (us; loop thread CPU {thread / units / 1000:.1f})")
    for key, ns in sorted(timer.ns.items(), key=lambda kv: -kv[1]):
        if timer.calls[key] * 100 < units:
            continue  # start-up only
        print(f"  {ns / units / 1000:8.2f}  {timer.calls[key] / units:6.2f} calls  {key}")


def _short(name: str) -> str:
    return name.split("/", 1)[-1].split("@", 1)[0] + "#" + name.rsplit("#", 1)[-1]


async def profile_path(wl: WorkloadRuntime, path: str, args: argparse.Namespace) -> None:
    argv = _arguments(path, args)
    units = args.rounds if path == "rtt" else max(1, args.bulk // 65536)
    unit = "round trip" if path == "rtt" else "64 KiB"
    await _invoke(wl, argv)  # warm-up
    runs = [await _timed(wl, argv, args.clients) for _ in range(args.repeat)]
    median = sorted(r[0] for r in runs)[len(runs) // 2]
    cpu = sorted(r[1] for r in runs)[len(runs) // 2]
    print(
        f"\n=== {path}: {' '.join(argv)}"
        + (f" x {args.clients} clients" if args.clients > 1 else "")
    )
    if path == "rtt":
        print(f"client timing, median of {args.repeat}: {median / units:.1f} us per round trip")
    else:
        print(
            f"client timing, median of {args.repeat}: {median / 1000:.1f} ms, "
            f"{args.bulk / 1048576 / (median / 1e6):.2f} MiB/s"
        )
    print(
        f"process CPU per {unit} (both guests and the host; start-up included): "
        f"{cpu / units:.1f} us"
    )
    counter = HostCallCounter()
    counter.install()
    try:
        await _invoke(wl, argv)
    finally:
        counter.remove()
    host = sum(counter.counts.values())
    print(f"host calls per {unit} (service and client together): {host / units:.2f}")
    for name, count in counter.counts.most_common(args.top):
        print(f"  {count / units:8.2f}  {_short(name)}")
    if args.breakdown:
        await breakdown(wl, argv, units, unit)
    if args.no_profile:
        return
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    await _invoke(wl, argv)
    prof.disable()
    wall = time.perf_counter() - start
    stats = pstats.Stats(prof)
    calls = sum(c[1] for c in stats.stats.values())  # type: ignore[attr-defined]
    print(f"wall of the invocation under the profiler: {wall * 1000:.1f} ms")
    print(f"Python function calls per {unit}: {calls / units:.0f}")
    for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).strip_dirs().sort_stats(key).print_stats(args.top)
        body = out.getvalue()
        print(f"--- top {args.top} by {title}")
        print(body[body.index("   ncalls") :].rstrip())


async def main(args: argparse.Namespace) -> None:
    guest = await net_guest()
    manifest = manifest_from_dict(
        _manifest(guest, args.fast_bytes), path="<profile>", base_dir=str(ROOT)
    )
    fabric = Fabric(manifest, emit=lambda line: None)
    await fabric.start()
    try:
        wl = fabric.workloads["profile"]
        for path in args.path or PATHS:
            await profile_path(wl, path, args)
    finally:
        await fabric.stop()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benches.profile_loopback", description=__doc__)
    p.add_argument("--path", action="append", choices=PATHS, help="repeatable; default: both")
    p.add_argument("--rounds", type=int, default=2000, help="round trips per rtt invocation")
    p.add_argument("--bulk", type=int, default=1 << 20, help="bytes per bulk invocation")
    p.add_argument("--repeat", type=int, default=5, help="unprofiled runs for the timing")
    p.add_argument(
        "--clients",
        type=int,
        default=1,
        help="concurrent clients in the timed runs (CPU per client)",
    )
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--fast-bytes",
        action="store_true",
        help="fast_bytes on both guests: stream bytes as latin-1 strings",
    )
    p.add_argument("--no-profile", action="store_true", help="timings and host calls only")
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="time each host function's lifts, implementation and lowering",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parse()))
