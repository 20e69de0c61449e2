"""Guests as fibers on one loop: concurrency, deadlines, traps, limits, the compile cache."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from fabric.engine import (
    ComponentLoadError,
    DeadlineExceeded,
    Engine,
    EngineConfig,
    GuestTrap,
    InstanceLimitReached,
    MissingImportsError,
)
from fabric.runtime import Runtime
from fabric.wasi import WasiConfig, WasiCtx
from tests.guestlib import wat_guest


async def test_thousand_guests_sleep_concurrently_on_one_loop(runtime: Runtime) -> None:
    comp = runtime.load(wat_guest("sleeper"))
    threads_before = threading.active_count()
    peak_threads = threads_before

    async def one() -> None:
        nonlocal peak_threads
        inst = await runtime.instantiate(comp, WasiCtx())
        try:
            await inst.call("sleep", 200_000_000)  # 200 ms on a monotonic-clock pollable
            peak_threads = max(peak_threads, threading.active_count())
        finally:
            inst.store.close()

    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(one() for _ in range(1000)))
    elapsed = loop.time() - start
    # All 1000 slept at once (not one after another), and no thread was added.
    assert elapsed >= 0.2
    assert elapsed < 200 * 0.2
    assert peak_threads == threads_before


async def test_spinning_guest_is_stopped_and_loop_stays_responsive(runtime: Runtime) -> None:
    spin = runtime.load(wat_guest("spin"))
    sleeper = runtime.load(wat_guest("sleeper"))
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.01)
            beats += 1

    async def other_guest() -> str:
        inst = await runtime.instantiate(sleeper, WasiCtx())
        try:
            await inst.call("sleep", 50_000_000)
            return "done"
        finally:
            inst.store.close()

    hb = asyncio.create_task(heartbeat())
    inst = await runtime.instantiate(spin, WasiCtx())
    try:
        spinning = asyncio.create_task(inst.call("spin", timeout=0.5))
        assert await other_guest() == "done"
        with pytest.raises(DeadlineExceeded):
            await spinning
    finally:
        inst.store.close()
        hb.cancel()
    assert beats >= 5  # the loop kept running while the guest spun


async def test_run_command_deadline_while_guest_waits(runtime: Runtime, cli_guest: Path) -> None:
    # The guest sleeps in a host call (no epoch tick can stop it): the one
    # deadline of run_command ends it, the store is closed, the caller gets
    # DeadlineExceeded.
    comp = runtime.load(cli_guest)
    out = bytearray()
    with pytest.raises(DeadlineExceeded):
        await runtime.run_command(
            comp,
            WasiCtx(WasiConfig(args=["app", "sleep", "5000"]), stdout=out.extend),
            timeout=0.3,
        )
    assert b"slept_ms" not in out
    ok = bytearray()
    code = await runtime.run_command(
        comp, WasiCtx(WasiConfig(args=["app", "sleep", "10"]), stdout=ok.extend), timeout=30
    )
    assert code == 0 and b"slept_ms=10" in ok


async def test_trap_carries_backtrace_and_other_guest_continues(
    runtime: Runtime, cli_guest: Path
) -> None:
    comp = runtime.load(cli_guest)
    out = bytearray()
    err = bytearray()
    trapping = runtime.run_command(
        comp, WasiCtx(WasiConfig(args=["app", "trap"]), stdout=out.extend, stderr=err.extend)
    )
    other_out = bytearray()
    fine = runtime.run_command(
        comp, WasiCtx(WasiConfig(args=["app", "sleep", "50"]), stdout=other_out.extend)
    )
    results = await asyncio.gather(trapping, fine, return_exceptions=True)
    assert isinstance(results[0], GuestTrap)
    assert results[0].backtrace, "a trap carries the wasm backtrace"
    assert any("abort" in frame for frame in results[0].backtrace)
    assert b"deliberate failure" in err
    assert results[1] == 0
    assert b"slept_ms=50" in other_out


async def test_memory_limit_refuses_growth(runtime: Runtime) -> None:
    comp = runtime.load(wat_guest("memory"))
    inst = await runtime.instantiate(comp, WasiCtx(), max_memory=4 * 65536)
    try:
        assert await inst.call("grow", 2) == 1  # 1 -> 3 pages: within 4
        assert await inst.call("grow", 10) == -1  # beyond the limit: refused
    finally:
        inst.store.close()
    unlimited = await runtime.instantiate(comp, WasiCtx())
    try:
        assert await unlimited.call("grow", 10) == 1
    finally:
        unlimited.store.close()


def test_compile_cache_hit_on_second_run(tmp_path: Path) -> None:
    path = wat_guest("sleeper")
    first = Engine(EngineConfig(cache_dir=str(tmp_path)))
    try:
        first.load(path)
        assert first.statistics()["compiled"] == 1
    finally:
        first.close()
    second = Engine(EngineConfig(cache_dir=str(tmp_path)))
    try:
        second.load(path)
        stats = second.statistics()
        assert stats["compiled"] == 0
        assert stats["cache_hits"] == 1
    finally:
        second.close()


def test_missing_import_is_named_at_load(runtime: Runtime) -> None:
    with pytest.raises(MissingImportsError) as info:
        runtime.load(wat_guest("hostcall"))
    assert "fabric:bench/host" in str(info.value)


def test_not_a_component(runtime: Runtime, tmp_path: Path) -> None:
    core = tmp_path / "core.wasm"
    core.write_bytes(b"\0asm\x01\x00\x00\x00")
    with pytest.raises(ComponentLoadError, match="core WebAssembly module"):
        runtime.load(core)
    text = tmp_path / "text.wasm"
    text.write_text("hello")
    with pytest.raises(ComponentLoadError, match="not a WebAssembly binary"):
        runtime.load(text)
    with pytest.raises(ComponentLoadError, match="no such file"):
        runtime.load(tmp_path / "missing.wasm")


def test_engine_config_validated_before_wasmtime_sees_it() -> None:
    from fabric.engine import ConfigError

    with pytest.raises(ConfigError):
        Engine(EngineConfig(max_wasm_stack=4 << 20, async_stack_size=2 << 20))


async def test_new_linkers_share_the_wasi_host_functions(runtime: Runtime) -> None:
    # Host functions are never freed (wasmtime may call them while any linker
    # lives), so a workload runtime creating linkers must not register more.
    from fabric.engine.callbacks import host_function_count

    before = host_function_count()
    linkers = [runtime.new_linker() for _ in range(5)]
    assert host_function_count() == before
    # ...and a guest runs through any of them.
    comp = runtime.load(wat_guest("tiny"), linker=linkers[-1])
    assert await runtime.run_command(comp, WasiCtx(WasiConfig()), linker=linkers[-1]) == 0


async def test_pooled_instances_are_bounded_and_their_slots_come_back_fresh(
    tmp_path: Path,
) -> None:
    rt = Runtime(EngineConfig(cache_dir=str(tmp_path), pool_instances=2))
    try:
        assert rt.engine.pooling
        comp = rt.load(wat_guest("memory"))
        first = await rt.instantiate(comp, WasiCtx())
        second = await rt.instantiate(comp, WasiCtx())
        assert await first.call("grow", 3) == 1  # 1 page before, 4 after
        with pytest.raises(InstanceLimitReached, match="limit"):
            await rt.instantiate(comp, WasiCtx())
        first.store.close()
        # the slot the grown memory used serves the next instance, as a fresh memory
        third = await rt.instantiate(comp, WasiCtx())
        assert await third.call("grow", 0) == 1
        second.store.close()
        third.store.close()
    finally:
        rt.close()


async def test_instances_past_the_limit_are_refused_by_name_and_others_go_on(
    tmp_path: Path,
) -> None:
    rt = Runtime(EngineConfig(cache_dir=str(tmp_path), pool_instances=3))
    try:
        comp = rt.load(wat_guest("memory"))
        tiny = rt.load(wat_guest("tiny"))
        held = [await rt.instantiate(comp, WasiCtx()) for _ in range(3)]
        assert rt.statistics()["instances"] == 3
        assert rt.statistics()["instance_limit"] == 3
        assert "instances=3/3" in repr(rt.engine)
        with pytest.raises(InstanceLimitReached) as info:
            await rt.instantiate(comp, WasiCtx())
        assert info.value.limit == 3
        assert not isinstance(info.value, GuestTrap)  # not the guest's fault
        message = str(info.value)
        assert "3 component instances" in message
        assert "max_instances" in message and "--max-instances" in message
        # a command run is refused the same way, and its store is cleaned up
        with pytest.raises(InstanceLimitReached):
            await rt.run_command(tiny, WasiCtx(WasiConfig()))
        stats = rt.statistics()
        assert stats["instances"] == 3
        assert stats["instances_refused"] == 2
        # the instances alive are untouched by the refusals
        for inst in held:
            assert await inst.call("grow", 0) == 1
        # one closed: the next one gets its slot
        held.pop().store.close()
        assert rt.statistics()["instances"] == 2
        assert await rt.run_command(tiny, WasiCtx(WasiConfig())) == 0
        held.append(await rt.instantiate(comp, WasiCtx()))
        for inst in held:
            inst.store.close()
        assert rt.statistics()["instances"] == 0
    finally:
        rt.close()


async def test_failed_instantiations_give_their_slot_back(tmp_path: Path) -> None:
    rt = Runtime(EngineConfig(cache_dir=str(tmp_path), pool_instances=1))
    try:
        comp = rt.load(wat_guest("memory"))
        # a store that fails to instantiate (limit on memory below the guest's
        # initial page) is closed by the runtime and frees its slot
        with pytest.raises(GuestTrap):
            await rt.instantiate(comp, WasiCtx(), max_memory=1)
        assert rt.statistics()["instances"] == 0
        inst = await rt.instantiate(comp, WasiCtx())
        inst.store.close()
        inst.store.close()  # a second close gives nothing back twice
        assert rt.statistics()["instances"] == 0
    finally:
        rt.close()


TWO_MEMORIES = """
(component
  (core module $a (memory 1) (func (export "one") (result i32) (i32.const 1)))
  (core module $b (memory 1))
  (core instance $ia (instantiate $a))
  (core instance $ib (instantiate $b))
  (func (export "one") (result s32) (canon lift (core func $ia "one")))
)
"""


async def test_a_pool_running_out_inside_wasmtime_is_the_same_named_error(
    tmp_path: Path,
) -> None:
    # one memory slot per instance: a component with two memories finds the
    # memory pool empty inside wasmtime, below the instance count
    from fabric.build import build_wat_guest

    rt = Runtime(EngineConfig(cache_dir=str(tmp_path), pool_instances=1))
    try:
        comp = rt.load(build_wat_guest(TWO_MEMORIES))
        with pytest.raises(InstanceLimitReached, match="maximum concurrent limit of 1") as info:
            await rt.instantiate(comp, WasiCtx())
        assert info.value.limit == 1
        assert rt.statistics()["instances"] == 0
        # the failed store is gone: a one-memory guest gets the pool
        inst = await rt.instantiate(rt.load(wat_guest("memory")), WasiCtx())
        assert await inst.call("grow", 0) == 1
        inst.store.close()
    finally:
        rt.close()


async def test_on_demand_allocation_has_no_instance_bound(tmp_path: Path) -> None:
    rt = Runtime(EngineConfig(cache_dir=str(tmp_path), pooling=False, pool_instances=1))
    try:
        assert not rt.engine.pooling
        comp = rt.load(wat_guest("memory"))
        insts = [await rt.instantiate(comp, WasiCtx()) for _ in range(3)]
        assert rt.statistics()["instances"] == 3
        assert rt.statistics()["instance_limit"] == 0
        for inst in insts:
            assert await inst.call("grow", 0) == 1
            inst.store.close()
    finally:
        rt.close()


def test_pool_size_is_validated() -> None:
    from fabric.engine import ConfigError

    with pytest.raises(ConfigError, match="pool_instances"):
        Engine(EngineConfig(pool_instances=0))


def test_engine_without_room_for_the_pool_allocates_on_demand() -> None:
    # wasmtime aborts the process when it cannot reserve the pool; under an
    # address-space limit the engine must start with on-demand allocation.
    import subprocess
    import sys

    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))\n"
        "from fabric.engine import Engine\n"
        "engine = Engine()\n"
        "print('pooling', engine.pooling)\n"
        "engine.close()\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pooling False" in done.stdout
