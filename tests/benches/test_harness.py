"""benches.harness: the statistics on known inputs, and the runner on tiny contenders."""

from __future__ import annotations

import asyncio

import pytest

from benches.env import BenchEnv
from benches.errors import ContenderSkipped
from benches.harness import (
    Sampler,
    apply_baseline,
    latency_stats,
    measure,
    percentile,
    run_slice,
    speedup,
)
from benches.model import ContenderResult, LatencyStats, LevelResult, Profile
from benches.registry import Registry, default_registry

TINY = Profile(
    name="tiny",
    levels=(1, 4),
    slices=2,
    slice_seconds=0.05,
    warmup_seconds=0.01,
    max_ops=400,
    op_timeout=5,
)


# ---------------------------------------------------------------- the math


def test_percentile_interpolates_linearly() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 10.0
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 90) == pytest.approx(9.1)
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile([7.0], 99) == 7.0
    assert percentile(list(map(float, range(101))), 37) == pytest.approx(37.0)


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_stats_from_nanoseconds() -> None:
    # 1..100 ms, shuffled: the order of samples must not matter
    ns = [ms * 1_000_000 for ms in range(100, 0, -1)]
    stats = latency_stats(ns)
    assert stats == LatencyStats(
        samples=100,
        min_ms=1.0,
        mean_ms=50.5,
        p50_ms=pytest.approx(50.5),
        p90_ms=pytest.approx(90.1),
        p99_ms=pytest.approx(99.01),
        max_ms=100.0,
    )
    assert latency_stats([]) is None


def test_speedup_directions() -> None:
    assert speedup(2.0, 10.0, lower_is_better=True) == 5.0  # 2 ms vs 10 ms baseline
    assert speedup(300.0, 100.0, lower_is_better=False) == 3.0  # ops/s
    assert speedup(None, 1.0, lower_is_better=True) is None
    assert speedup(1.0, 0.0, lower_is_better=False) is None


def _level(c: int, p50: float, tput: float, ops: int = 10) -> LevelResult:
    lat = LatencyStats(
        samples=ops, min_ms=p50, mean_ms=p50, p50_ms=p50, p90_ms=p50, p99_ms=p50, max_ms=p50
    )
    return LevelResult(concurrency=c, ops=ops, throughput=tput, latency=lat)


def test_apply_baseline_level_by_level() -> None:
    base = ContenderResult(
        name="direct", group="g", levels=[_level(1, 10.0, 100.0), _level(8, 40.0, 200.0)]
    )
    fast = ContenderResult(
        name="pool",
        group="g",
        levels=[
            _level(1, 0.5, 2000.0),
            _level(8, 4.0, 1000.0),
            LevelResult(concurrency=64, skipped="too many"),
        ],
    )
    out = apply_baseline([base, fast], "direct")
    assert [lv.speedup_p50 for lv in out[0].levels] == [1.0, 1.0]
    pool = out[1]
    assert pool.levels[0].speedup_p50 == pytest.approx(20.0)
    assert pool.levels[0].speedup_throughput == pytest.approx(20.0)
    assert pool.levels[1].speedup_p50 == pytest.approx(10.0)
    assert pool.levels[1].speedup_throughput == pytest.approx(5.0)
    assert pool.levels[2].speedup_p50 is None
    assert apply_baseline([fast], "missing") == [fast]


def test_sampler_result_throughput_and_mb() -> None:
    sampler = Sampler()
    for ms in (1, 2, 3, 4):
        sampler.latencies_ns.append(ms * 1_000_000)
    sampler.wall_seconds = 2.0
    sampler.cpu_seconds = 0.004
    sampler.error(TimeoutError())
    result = sampler.result(concurrency=4, bytes_per_op=1_000_000)
    assert result.ops == 4 and result.errors == 1
    assert result.first_error == "TimeoutError: TimeoutError"
    assert result.throughput == 2.0
    assert result.mb_per_s == 2.0
    assert result.cpu_us_per_op == pytest.approx(1000.0)
    assert result.latency is not None and result.latency.p50_ms == pytest.approx(2.5)
    assert "ops=4" in repr(sampler)


# ---------------------------------------------------------------- runner


class Sleeper:
    """Takes ``delay`` seconds per op; counts concurrent ops."""

    group = "test"
    description = "sleeps"

    def __init__(self, name: str, delay: float, *, fail_every: int = 0) -> None:
        self.name = name
        self.delay = delay
        self.fail_every = fail_every
        self.calls = 0
        self.inflight = 0
        self.peak = 0
        self.set_up = self.torn_down = False
        self.max_concurrency: int | None = None

    async def setup(self) -> None:
        self.set_up = True

    async def op(self) -> None:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RuntimeError("boom")
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.inflight -= 1

    async def teardown(self) -> None:
        self.torn_down = True


class Skipper(Sleeper):
    async def setup(self) -> None:
        raise ContenderSkipped("needs a thing")


class BrokenOp(Sleeper):
    async def op(self) -> None:
        raise ConnectionRefusedError("nobody home")


async def test_run_slice_respects_concurrency_and_op_cap() -> None:
    contender = Sleeper("s", 0.001)
    sampler = Sampler()
    await run_slice(contender, 8, seconds=10.0, max_ops=50, op_timeout=5, sampler=sampler)
    assert sampler.ops == 50
    assert contender.peak == 8
    assert sampler.wall_seconds > 0


async def test_run_slice_counts_errors_and_timeouts() -> None:
    contender = Sleeper("s", 0.0, fail_every=2)
    sampler = Sampler()
    await run_slice(contender, 1, seconds=10.0, max_ops=10, op_timeout=5, sampler=sampler)
    assert (sampler.ops, sampler.errors) == (5, 5)
    assert sampler.first_error == "RuntimeError: boom"

    slow = Sleeper("slow", 10.0)
    sampler = Sampler()
    await run_slice(slow, 2, seconds=0.01, max_ops=2, op_timeout=0.05, sampler=sampler)
    assert (sampler.ops, sampler.errors) == (0, 2)
    assert sampler.first_error is not None and "TimeoutError" in sampler.first_error


async def test_measure_side_by_side_with_skips_failures_and_limits() -> None:
    fast = Sleeper("fast", 0.0005)
    slow = Sleeper("slow", 0.002)
    slow.max_concurrency = 1
    skipped = Skipper("skipper", 0)
    broken = BrokenOp("broken", 0)
    results = await measure([slow, fast, skipped, broken], TINY.levels, TINY, baseline="slow")
    by_name = {r.name: r for r in results}
    assert [r.name for r in results] == ["slow", "fast", "skipper", "broken"]
    assert by_name["skipper"].status == "skipped" and by_name["skipper"].reason == "needs a thing"
    assert by_name["broken"].status == "failed"
    assert "ConnectionRefusedError" in (by_name["broken"].reason or "")
    assert fast.torn_down and slow.torn_down
    assert broken.torn_down and not skipped.torn_down  # torn down after its failed first op

    f1 = by_name["fast"].level(1)
    s1 = by_name["slow"].level(1)
    assert f1 is not None and s1 is not None
    assert f1.ops > 0 and s1.ops > 0
    assert f1.latency is not None and f1.latency.p50_ms <= f1.latency.p99_ms
    assert s1.speedup_p50 == 1.0 and s1.speedup_throughput == 1.0
    assert f1.speedup_p50 is not None and f1.speedup_p50 > 1.0  # sleeps 4x shorter

    s4 = by_name["slow"].level(4)
    assert s4 is not None and s4.skipped and "limit (1)" in s4.skipped
    f4 = by_name["fast"].level(4)
    assert f4 is not None and f4.ops > 0 and f4.speedup_p50 is None  # no baseline at c=4
    assert fast.peak == 4


async def test_missing_pgbouncer_is_reported_as_skipped() -> None:
    from benches.baselines import PgBouncerConnect

    async with BenchEnv(pgbouncer_binary="/nonexistent/pgbouncer") as env:
        results = await measure([PgBouncerConnect(env)], [1], TINY)
    assert results[0].status == "skipped"
    assert results[0].reason is not None
    assert results[0].reason.startswith("pgbouncer not installed")
    assert env.cluster is None  # nothing was started for a contender that cannot run


# ---------------------------------------------------------------- registry


def test_registry_selection_and_plugins() -> None:
    registry = default_registry()
    names = [s.name for s in registry.scenarios]
    assert names[:4] == ["pg-select1", "mysql-select1", "loopback-rtt", "loopback-bulk"]
    loopback = [s.name for s in registry.select(["loopback-*"])]
    assert loopback[:2] == ["loopback-rtt", "loopback-bulk"]
    from benches.errors import UnknownScenario

    with pytest.raises(UnknownScenario, match="pg-select1"):
        registry.select(["nope"])
    assert registry.get("loopback-bulk").levels_for(TINY) == [1, 4]
    assert registry.get("loopback-bulk").levels_for(
        Profile(
            name="x", levels=(1, 64, 256), slices=1, slice_seconds=1, warmup_seconds=0, max_ops=1
        )
    ) == [1, 64]


def test_registry_plugin_errors_are_recorded() -> None:
    registry = Registry()
    registry.load_plugins(package="benches", prefix="no_such_prefix_")
    assert registry.plugins == [] and registry.plugin_errors == []
    registry.load_plugins(package="benches", prefix="harness")  # module without register()
    assert registry.plugin_errors and "register" in registry.plugin_errors[0]


class SelfTimed(Sleeper):
    """An op that reports its own duration (as a guest timing its loop does)."""

    async def op(self) -> int:  # type: ignore[override]
        await asyncio.sleep(0.002)  # start-up the op leaves out of its timing
        return 1_000_000  # 1 ms


async def test_an_op_that_times_itself_gives_the_latency_and_throughput() -> None:
    sampler = Sampler()
    await run_slice(SelfTimed("t", 0), 2, seconds=10.0, max_ops=10, op_timeout=5, sampler=sampler)
    level = sampler.result(2, bytes_per_op=1_000_000)
    assert sampler.ops == 10
    assert level.latency is not None and level.latency.p50_ms == 1.0
    # 10 ops of 1 ms each, spread over 2 workers: 2,000 ops/s, 2,000 MB/s
    assert level.throughput == 2000.0
    assert level.mb_per_s == 2000.0
