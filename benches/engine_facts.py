"""One-shot engine measurements that are not per-operation latencies.

``python -m benches.engine_facts [--guests N] [--out DIR]`` measures:

* cache hit to first instance of a componentize-py guest (a new engine that
  finds the compiled component on disk: deserialize + instantiate);
* memory per suspended guest: N guests parked in a monotonic-clock sleep at
  once, RSS and address space before and after, divided by N;
* ``list<u8>`` throughput both ways through fabric's host functions, at
  several chunk sizes, next to the same transfer as ``string`` (wasmtime's
  compiled fast path, the ceiling of the C API).

It prints a markdown table and writes ``engine-facts.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from fabric.build import build_python_guest, build_wat_guest
from fabric.engine import Engine, EngineConfig, Store
from fabric.runtime import Runtime
from fabric.wasi import WasiCtx

GUESTS = Path(__file__).resolve().parent.parent / "tests" / "guests"


def _status() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmSize"):
            out[key] = int(value.split()[0])  # KiB
    return out


async def cache_hit_first_instance(cache_dir: str) -> float:
    path = await asyncio.to_thread(build_python_guest, GUESTS / "cli")
    warm = Engine(EngineConfig(cache_dir=cache_dir))
    warm.load(path)  # make sure the compiled copy is on disk
    warm.close()
    rt = Runtime(EngineConfig(cache_dir=cache_dir))
    try:
        t0 = time.perf_counter()
        comp = rt.load(path)
        store = Store(rt.engine, WasiCtx())
        await store.instantiate(rt.linker, comp)
        elapsed = time.perf_counter() - t0
        store.close()
        assert rt.engine.statistics()["compiled"] == 0
        return elapsed * 1000
    finally:
        rt.close()


async def suspended_guest_memory(n: int) -> dict[str, float]:
    rt = Runtime()
    try:
        comp = rt.load(build_wat_guest(GUESTS / "wat" / "sleeper.wat"))
        parked = 0
        target = 10
        all_parked = asyncio.Event()
        stores: list[Store] = []

        async def one() -> None:
            nonlocal parked
            store = Store(rt.engine, WasiCtx())
            stores.append(store)
            inst = await store.instantiate(rt.linker, comp)
            parked += 1
            if parked == target:
                all_parked.set()
            await inst.call("sleep", 3_000_000_000)

        # warm the allocator with a few guests first
        await asyncio.gather(*(one() for _ in range(10)))
        for s in stores:
            s.close()
        stores.clear()
        parked, target = 0, n
        all_parked.clear()
        before = _status()
        tasks = [asyncio.create_task(one()) for _ in range(n)]
        await all_parked.wait()
        await asyncio.sleep(0.2)  # every guest is now suspended in pollable.block
        during = _status()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in stores:
            s.close()
        return {
            "guests": n,
            "rss_kib_per_guest": (during["VmRSS"] - before["VmRSS"]) / n,
            "vm_kib_per_guest": (during["VmSize"] - before["VmSize"]) / n,
        }
    finally:
        rt.close()


async def bytes_throughput() -> list[dict[str, Any]]:
    from benches.hostvalues import EXPORT, values_linker

    rt = Runtime()
    rows: list[dict[str, Any]] = []
    try:
        linker = values_linker(rt)
        path = await asyncio.to_thread(
            build_python_guest, GUESTS / "values", world="values", wit_dir=GUESTS / "values" / "wit"
        )
        comp = rt.load(path, linker=linker)
        inst = await rt.instantiate(comp, WasiCtx(), linker=linker)
        total = 4 << 20
        for chunk in (1024, 16384, 65536):
            for direction, export in (("guest->host", "push"), ("host->guest", "pull")):
                await inst.call(f"{EXPORT}#{export}", 1 << 20, chunk)
                t0 = time.perf_counter()
                await inst.call(f"{EXPORT}#{export}", total, chunk)
                dt = time.perf_counter() - t0
                rows.append(
                    {
                        "shape": "list<u8>",
                        "direction": direction,
                        "chunk": chunk,
                        "mb_per_s": total / dt / 1e6,
                    }
                )
        inst.store.close()
    finally:
        rt.close()
    return rows


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        first = await cache_hit_first_instance(tmp)
    memory = await suspended_guest_memory(args.guests)
    throughput = await bytes_throughput()
    return {"cache_hit_first_instance_ms": first, "suspended": memory, "bytes": throughput}


def render(facts: dict[str, Any]) -> str:
    m = facts["suspended"]
    lines = [
        "| measurement | value |",
        "|---|---|",
        f"| componentize-py guest: cache hit to first instance | "
        f"{facts['cache_hit_first_instance_ms']:.1f} ms |",
        f"| suspended guests in flight | {m['guests']:,} |",
        f"| RSS per suspended guest | {m['rss_kib_per_guest']:.1f} KiB |",
        f"| address space per suspended guest | {m['vm_kib_per_guest']:.0f} KiB |",
    ]
    lines.extend(
        f"| {row['shape']} {row['direction']}, {row['chunk'] // 1024} KiB chunks | "
        f"{row['mb_per_s']:.1f} MB/s |"
        for row in facts["bytes"]
    )
    return "\n".join(lines)


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m benches.engine_facts")
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    facts = uvloop.run(main_async(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine-facts.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(render(facts))


if __name__ == "__main__":
    main()
