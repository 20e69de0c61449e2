"""One-shot engine measurements that are not per-operation latencies.

``python -m benches.engine_facts [--guests N] [--out DIR]`` measures:

* cache hit to first instance of a componentize-py guest (a new engine that
  finds the compiled component on disk: deserialize + instantiate);
* memory per suspended guest: N guests parked in a monotonic-clock sleep at
  once, RSS and address space before and after, divided by N;
* ``list<u8>`` throughput both ways through fabric's host functions, at
  several chunk sizes (the componentize-py values guest);
* the same bytes as ``list<u8>`` and as a ``string`` lowered with
  ``string-encoding=latin1+utf16`` (one latin-1 code unit per byte), both
  ways, from a WAT component (``bytes_as_string.wat``, ``--string-only``):
  the measurement behind docs/bytes-as-strings.md;
* a guest echoing 8 MiB between two streams with its ``wasi:io/streams``
  straight from the host and through the latin-1 streams adapter
  (``fabric/wasi/adapters/latin1_streams.wat``).

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
from fabric.engine import Engine, EngineConfig, HostInterface, Store
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


BYTES_AS_STRING = Path(__file__).resolve().parent / "bytes_as_string.wat"
PATTERN = bytes(range(256)) * 256  # 64 KiB: every byte value


def bytes_interface(seen: list[bytes]) -> HostInterface:
    """``fabric:bench/bytes``: the host ends of ``bytes_as_string.wat``.

    The string functions convert as a host serving bytes would: a string
    taken becomes ``bytes`` (``encode("latin-1")``), bytes given become a
    string (``decode("latin-1")``)."""
    iface = HostInterface("fabric:bench/bytes")

    def take_str(cx: Any, s: str) -> int:
        data = s.encode("latin-1")
        seen[:] = [data]
        return len(data)

    def take_bytes(cx: Any, b: bytes) -> int:
        seen[:] = [b]
        return len(b)

    iface.func("take-str", take_str)
    iface.func("give-str", lambda cx, n: PATTERN[:n].decode("latin-1"))
    iface.func("take-bytes", take_bytes)
    iface.func("give-bytes", lambda cx, n: PATTERN[:n])
    return iface


async def string_vs_bytes(total: int = 4 << 20) -> list[dict[str, Any]]:
    """Bytes through the C API as ``list<u8>`` and as a latin-1 ``string``."""
    rt = Runtime()
    rows: list[dict[str, Any]] = []
    seen: list[bytes] = []
    try:
        linker = rt.new_linker()
        linker.define(bytes_interface(seen))
        path = await asyncio.to_thread(build_wat_guest, BYTES_AS_STRING)
        comp = rt.load(path, linker=linker)
        inst = await rt.instantiate(comp, WasiCtx(), linker=linker)
        for chunk in (64, 1024, 16384, 65536):
            for shape in ("list<u8>", "string"):
                kind = "bytes" if shape == "list<u8>" else "str"
                for direction, export in (("guest->host", "push"), ("host->guest", "pull")):
                    name = f"{export}-{kind}"
                    await inst.call(name, 64 * chunk, chunk)  # warm-up
                    t0 = time.perf_counter()
                    moved = await inst.call(name, total, chunk)
                    dt = time.perf_counter() - t0
                    if moved != total // chunk * chunk:
                        raise RuntimeError(f"{name}: moved {moved} of {total}")
                    if export == "push" and seen[0] != PATTERN[:chunk]:
                        raise RuntimeError(f"{name}: the host received other bytes")
                    rows.append(
                        {
                            "shape": shape,
                            "direction": direction,
                            "chunk": chunk,
                            "mb_per_s": moved / dt / 1e6,
                            "ns_per_byte": dt / moved * 1e9,
                            "us_per_call": dt / (total // chunk) * 1e6,
                        }
                    )
        inst.store.close()
    finally:
        rt.close()
    return rows


LATIN1_ECHO = GUESTS / "wat" / "latin1_echo.wat"


async def adapter_echo(total: int = 8 << 20, rounds: int = 3) -> dict[str, float]:
    """A guest echoing ``total`` bytes from an input stream to an output stream
    (64 KiB reads), with its ``wasi:io/streams`` straight from the host
    (``list<u8>``) and through the latin-1 streams adapter: MB/s, best of
    ``rounds``, taken alternately."""
    from fabric.wasi.adapters import LATIN1_STREAMS
    from fabric.wasi.io import BytesInput, SinkOutput

    rt = Runtime()
    text = LATIN1_ECHO.read_text().replace("  ADAPTER\n", LATIN1_STREAMS.read_text())
    payload = PATTERN * (total // len(PATTERN))
    best = {"list<u8>": 0.0, "adapter (latin-1 string)": 0.0}
    try:
        paths = {}
        for name, streams in zip(best, ("$streams-in", "$adapted"), strict=True):
            built = await asyncio.to_thread(build_wat_guest, text.replace("STREAMS", streams))
            paths[name] = rt.load(built)
        for _ in range(rounds):
            for name, comp in paths.items():
                inst = await rt.instantiate(comp, WasiCtx())
                got = bytearray()
                t0 = time.perf_counter()
                n = await inst.call("echo", BytesInput(payload), SinkOutput(got.extend), total)
                dt = time.perf_counter() - t0
                inst.store.close()
                if n != total or got != payload:
                    raise RuntimeError(f"{name}: the echo lost or changed bytes")
                best[name] = max(best[name], total / dt / 1e6)
    finally:
        rt.close()
    return best


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    as_string = await string_vs_bytes()
    echo = await adapter_echo()
    if args.string_only:
        return {"string_vs_bytes": as_string, "adapter_echo": echo}
    with tempfile.TemporaryDirectory() as tmp:
        first = await cache_hit_first_instance(tmp)
    memory = await suspended_guest_memory(args.guests)
    throughput = await bytes_throughput()
    return {
        "cache_hit_first_instance_ms": first,
        "suspended": memory,
        "bytes": throughput,
        "string_vs_bytes": as_string,
        "adapter_echo": echo,
    }


def render_string_vs_bytes(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| chunk | direction | list<u8> MB/s | string MB/s | list<u8> ns/byte |"
        " string ns/byte | list<u8> us/call | string us/call |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(r["chunk"], r["direction"], r["shape"]): r for r in rows}
    for chunk in sorted({r["chunk"] for r in rows}):
        for direction in ("guest->host", "host->guest"):
            b = by_key[(chunk, direction, "list<u8>")]
            t = by_key[(chunk, direction, "string")]
            lines.append(
                f"| {chunk:,} B | {direction} | {b['mb_per_s']:.1f} | {t['mb_per_s']:.1f} | "
                f"{b['ns_per_byte']:.2f} | {t['ns_per_byte']:.2f} | "
                f"{b['us_per_call']:.1f} | {t['us_per_call']:.1f} |"
            )
    return "\n".join(lines)


def render_adapter_echo(echo: dict[str, float]) -> str:
    lines = ["| guest echo, 64 KiB reads, streams | MB/s |", "|---|---:|"]
    lines.extend(f"| {name} | {mbs:.1f} |" for name, mbs in echo.items())
    return "\n".join(lines)


def render(facts: dict[str, Any]) -> str:
    if "suspended" not in facts:
        return (
            render_string_vs_bytes(facts["string_vs_bytes"])
            + "\n\n"
            + render_adapter_echo(facts["adapter_echo"])
        )
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
    return "\n\n".join(
        [
            "\n".join(lines),
            render_string_vs_bytes(facts["string_vs_bytes"]),
            render_adapter_echo(facts["adapter_echo"]),
        ]
    )


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m benches.engine_facts")
    parser.add_argument("--guests", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--string-only",
        action="store_true",
        help="only bytes as list<u8> against bytes as a latin-1 string",
    )
    args = parser.parse_args()
    facts = uvloop.run(main_async(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine-facts.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(render(facts))


if __name__ == "__main__":
    main()
