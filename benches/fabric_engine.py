"""Engine benchmarks: host calls, instantiation, ``list<u8>`` throughput.

Each fabric contender is compared with the same work done by a minimal
driver written directly against wasmtime's C API (``_raw_capi.py``), the
floor that fabric's bridge adds its marshaling, resource tables, deadlines
and error handling to.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from benches import _raw_capi as raw
from benches.registry import Registry
from fabric.build import build_python_guest, build_wat_guest
from fabric.engine import HostInterface, Instance, Store
from fabric.runtime import Runtime
from fabric.wasi import WasiCtx

GUESTS = Path(__file__).resolve().parent.parent / "tests" / "guests"
HOSTCALLS_PER_OP = 100

_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime()
    return _runtime


def wat(name: str) -> Path:
    return build_wat_guest(GUESTS / "wat" / f"{name}.wat")


def bench_host(linker_owner: Runtime) -> Any:
    linker = linker_owner.new_linker()
    host = HostInterface("fabric:bench/host")
    host.func("noop", lambda cx: None)

    async def noop_async(cx: Any) -> None:
        return None

    host.func("noop-async", noop_async)
    linker.define(host)
    return linker


class FabricHostcall:
    group = "fabric"

    def __init__(self, env: Any, *, is_async: bool) -> None:
        self.is_async = is_async
        kind = "async (suspends)" if is_async else "sync"
        self.name = f"fabric {kind} host call x{HOSTCALLS_PER_OP}"
        self.description = f"{HOSTCALLS_PER_OP} {kind} host imports from one export call"
        self.instance: Instance | None = None

    async def setup(self) -> None:
        rt = runtime()
        linker = bench_host(rt)
        comp = rt.load(wat("hostcall"), linker=linker)
        self.instance = await rt.instantiate(comp, WasiCtx(), linker=linker)
        self.func = self.instance.func("call-n-async" if self.is_async else "call-n")

    async def op(self) -> None:
        assert self.instance is not None
        await self.instance.call(self.func, HOSTCALLS_PER_OP)

    async def teardown(self) -> None:
        if self.instance is not None:
            self.instance.store.close()


class RawHostcall:
    group = "C API"
    name = f"raw C-API async host call x{HOSTCALLS_PER_OP}"
    description = "the same guest on a minimal ctypes driver (no marshaling layer)"

    async def setup(self) -> None:
        self.guest = raw.RawGuest(wat("hostcall").read_bytes())
        await self.guest.start()

    async def op(self) -> None:
        await self.guest.call_u32("call-n-async", HOSTCALLS_PER_OP)

    async def teardown(self) -> None:
        self.guest.close()


class FabricInstantiate:
    group = "fabric"

    def __init__(self, env: Any, *, python: bool) -> None:
        self.python = python
        self.name = (
            "fabric instantiate (componentize-py guest)" if python else "fabric instantiate (WAT)"
        )
        self.description = "new store + instantiate from the deserialized component + drop"

    async def setup(self) -> None:
        rt = runtime()
        if self.python:
            path = await asyncio.to_thread(build_python_guest, GUESTS / "cli")
        else:
            path = wat("tiny")
        self.rt = rt
        self.component = rt.load(path)

    async def op(self) -> None:
        store = Store(self.rt.engine, WasiCtx())
        try:
            await store.instantiate(self.rt.linker, self.component)
        finally:
            store.close()

    async def teardown(self) -> None:
        return None


class RawInstantiate:
    group = "C API"
    name = "raw C-API instantiate (WAT)"
    description = "store_new + instantiate_async + store_delete on a minimal ctypes driver"

    async def setup(self) -> None:
        self.guest = raw.RawGuest(wat("tiny").read_bytes(), with_host=False)

    async def op(self) -> None:
        await self.guest.instantiate_once()

    async def teardown(self) -> None:
        self.guest.close()


def register(registry: Registry) -> None:
    registry.add_scenario(
        "engine-hostcall",
        title=f"Engine: {HOSTCALLS_PER_OP} host calls per op",
        description=(
            "A WAT guest calls a no-op host import in a loop. fabric's async host "
            "functions (the guest fiber suspends and the coroutine runs on the loop) vs "
            "the same on a minimal C-API driver; latency per op covers "
            f"{HOSTCALLS_PER_OP} calls."
        ),
        baseline=RawHostcall.name,
        levels=(1,),
    )
    registry.add_contender("engine-hostcall", lambda env: RawHostcall())
    registry.add_contender("engine-hostcall", lambda env: FabricHostcall(env, is_async=True))
    registry.add_contender("engine-hostcall", lambda env: FabricHostcall(env, is_async=False))

    registry.add_scenario(
        "engine-instantiate",
        title="Engine: instantiate from the compile cache",
        description=(
            "A fresh store and instance per op, as every component invocation does: "
            "the smallest WAT component and a componentize-py guest."
        ),
        baseline=RawInstantiate.name,
        levels=(1, 8),
    )
    registry.add_contender("engine-instantiate", lambda env: RawInstantiate())
    registry.add_contender("engine-instantiate", lambda env: FabricInstantiate(env, python=False))
    registry.add_contender("engine-instantiate", lambda env: FabricInstantiate(env, python=True))
