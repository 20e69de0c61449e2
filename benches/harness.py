"""Measure contenders side by side.

A *contender* is anything with ``name``, ``group`` and three coroutines:
``setup()``, ``op()`` (one invocation: the thing being measured) and
``teardown()``. A *scenario* (:mod:`benches.registry`) groups contenders that
do the same job by different routes, and names one of them as the baseline.

For each concurrency level ``c`` the runner starts ``c`` worker tasks per
contender; each worker calls ``op()`` in a loop and records its latency.
Contenders take turns in short slices, round-robin with a rotating start,
so each one sees the same moment of a shared, noisy machine. Throughput is
successful operations divided by the wall time of that contender's slices.

The math (:func:`percentile`, :func:`latency_stats`, :func:`speedup`) is
plain functions over numbers, tested on known inputs.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

import msgspec

from benches.errors import ContenderSkipped
from benches.model import ContenderResult, ContenderStatus, LatencyStats, LevelResult, Profile
from fabric.stats import percentile

__all__ = [
    "Contender",
    "Sampler",
    "apply_baseline",
    "contender_attr",
    "latency_stats",
    "measure",
    "percentile",
    "run_slice",
    "speedup",
]

Progress = Callable[[str], None]
_T = TypeVar("_T")


@runtime_checkable
class Contender(Protocol):
    """What the harness measures.

    Optional attributes, read with :func:`contender_attr`:
    ``description: str``; ``bytes_per_op: int`` (payload bytes moved by one
    ``op()``, turns on MB/s); ``max_concurrency: int | None`` (levels above
    it are reported as skipped).

    ``setup()`` may raise :class:`~benches.errors.ContenderSkipped` to be
    reported as skipped with its message as the reason.

    ``op()`` returns ``None``, or an ``int``: the operation's own duration in
    nanoseconds, timed inside it (a guest timing its loop, so that process
    or instance start-up is left out). That duration is then the latency
    sample, and throughput is operations per second of those durations
    spread over the workers (``ops / (sum of durations / c)``).
    """

    name: str
    group: str

    async def setup(self) -> None: ...

    async def op(self) -> int | None: ...

    async def teardown(self) -> None: ...


def contender_attr(contender: Contender, name: str, default: _T) -> _T:
    """An optional contender attribute (``description``, ``bytes_per_op``, ...)."""
    value: _T = getattr(contender, name, default)
    return value


# ---------------------------------------------------------------- the math


def latency_stats(latencies_ns: Sequence[int]) -> LatencyStats | None:
    """Summary of latencies given in nanoseconds, in milliseconds."""
    if not latencies_ns:
        return None
    ms = sorted(value / 1e6 for value in latencies_ns)
    return LatencyStats(
        samples=len(ms),
        min_ms=ms[0],
        mean_ms=math.fsum(ms) / len(ms),
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        max_ms=ms[-1],
    )


def speedup(value: float | None, baseline: float | None, *, lower_is_better: bool) -> float | None:
    """How many times better ``value`` is than ``baseline`` (>1 is better)."""
    if value is None or baseline is None or value <= 0 or baseline <= 0:
        return None
    return baseline / value if lower_is_better else value / baseline


def apply_baseline(contenders: list[ContenderResult], baseline: str) -> list[ContenderResult]:
    """Fill ``speedup_p50`` / ``speedup_throughput`` against ``baseline``, level by level."""
    base = next((c for c in contenders if c.name == baseline), None)
    if base is None:
        return contenders
    out: list[ContenderResult] = []
    for contender in contenders:
        levels: list[LevelResult] = []
        for level in contender.levels:
            ref = base.level(level.concurrency)
            if ref is None or level.skipped or ref.skipped:
                levels.append(level)
                continue
            levels.append(
                _replace(
                    level,
                    speedup_p50=speedup(
                        level.latency.p50_ms if level.latency else None,
                        ref.latency.p50_ms if ref.latency else None,
                        lower_is_better=True,
                    ),
                    speedup_throughput=speedup(
                        level.throughput if level.ops else None,
                        ref.throughput if ref.ops else None,
                        lower_is_better=False,
                    ),
                )
            )
        out.append(_replace_contender(contender, levels))
    return out


def _replace(level: LevelResult, **changes: float | None) -> LevelResult:
    return msgspec.structs.replace(level, **changes)


def _replace_contender(contender: ContenderResult, levels: list[LevelResult]) -> ContenderResult:
    return msgspec.structs.replace(contender, levels=levels)


# ---------------------------------------------------------------- sampling


class Sampler:
    """Accumulates one contender's measurements at one level, across slices."""

    __slots__ = (
        "cpu_seconds",
        "errors",
        "first_error",
        "latencies_ns",
        "self_timed_ns",
        "wall_seconds",
    )

    def __init__(self) -> None:
        self.latencies_ns: array[int] = array("q")
        self.errors = 0
        self.first_error: str | None = None
        self.wall_seconds = 0.0
        self.cpu_seconds = 0.0
        self.self_timed_ns = 0  # sum of the durations ops reported themselves

    @property
    def ops(self) -> int:
        return len(self.latencies_ns)

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            text = str(exc) or type(exc).__name__
            self.first_error = f"{type(exc).__name__}: {text}"[:300]

    def result(self, concurrency: int, bytes_per_op: int) -> LevelResult:
        throughput = self.ops / self.wall_seconds if self.wall_seconds > 0 else 0.0
        if self.self_timed_ns:
            throughput = self.ops * concurrency / (self.self_timed_ns / 1e9)
        return LevelResult(
            concurrency=concurrency,
            ops=self.ops,
            errors=self.errors,
            first_error=self.first_error,
            wall_seconds=self.wall_seconds,
            throughput=throughput,
            mb_per_s=throughput * bytes_per_op / 1e6 if bytes_per_op else None,
            cpu_us_per_op=self.cpu_seconds / self.ops * 1e6 if self.ops else None,
            latency=latency_stats(self.latencies_ns),
        )

    def __repr__(self) -> str:
        return f"<Sampler ops={self.ops} errors={self.errors} wall={self.wall_seconds:.3f}s>"


async def run_slice(
    contender: Contender,
    concurrency: int,
    seconds: float,
    max_ops: int,
    op_timeout: float,
    sampler: Sampler,
) -> None:
    """Run ``concurrency`` workers calling ``op()`` for ``seconds`` or ``max_ops`` ops."""
    gc.collect()  # before the clock starts: a collection inside a slice is noise
    remaining = max_ops
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    append = sampler.latencies_ns.append

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0 and clock() < deadline:
            remaining -= 1
            start = clock()
            try:
                async with asyncio.timeout(op_timeout):
                    timed = await contender.op()
            except Exception as exc:
                sampler.error(exc)
            else:
                if timed is None:
                    append(clock() - start)
                else:
                    append(timed)
                    sampler.self_timed_ns += timed

    wall0, cpu0 = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    sampler.wall_seconds += time.perf_counter() - wall0
    sampler.cpu_seconds += time.process_time() - cpu0


# ----------------------------------------------------------------- running


class _Entry:
    __slots__ = ("contender", "reason", "status")

    def __init__(self, contender: Contender) -> None:
        self.contender = contender
        self.status: ContenderStatus = "ok"
        self.reason: str | None = None


async def _setup(entry: _Entry, profile: Profile) -> None:
    contender = entry.contender
    try:
        async with asyncio.timeout(profile.setup_timeout):
            await contender.setup()
    except ContenderSkipped as exc:
        entry.status, entry.reason = "skipped", str(exc) or type(exc).__name__
        return
    except Exception as exc:
        entry.status, entry.reason = "failed", f"setup: {type(exc).__name__}: {exc}"[:500]
        return
    try:  # one operation first, so a broken contender fails fast and clearly
        async with asyncio.timeout(profile.op_timeout):
            await contender.op()
    except Exception as exc:
        entry.status, entry.reason = "failed", f"first op: {type(exc).__name__}: {exc}"[:500]
        await _teardown(contender)


async def _teardown(contender: Contender) -> None:
    try:
        async with asyncio.timeout(60):
            await contender.teardown()
    except Exception:  # a failing teardown must not lose the measurements
        pass


async def measure(
    contenders: Sequence[Contender],
    levels: Sequence[int],
    profile: Profile,
    *,
    baseline: str | None = None,
    progress: Progress | None = None,
    label: str = "",
) -> list[ContenderResult]:
    """Set up every contender, measure them level by level, tear them down."""
    say = progress or (lambda _msg: None)
    entries = [_Entry(c) for c in contenders]
    for entry in entries:
        await _setup(entry, profile)
        if entry.status != "ok":
            say(f"{label}{entry.contender.name}: {entry.status}: {entry.reason}")
    ready = [e for e in entries if e.status == "ok"]
    per_level: dict[str, list[LevelResult]] = {e.contender.name: [] for e in entries}
    per_slice_ops = max(1, profile.max_ops // profile.slices)
    try:
        for level in levels:
            active: list[Contender] = []
            for entry in ready:
                limit = getattr(entry.contender, "max_concurrency", None)
                if isinstance(limit, int) and level > limit:
                    reason = f"concurrency {level} is above this contender's limit ({limit})"
                    per_level[entry.contender.name].append(
                        LevelResult(concurrency=level, skipped=reason)
                    )
                else:
                    active.append(entry.contender)
            samplers = {c.name: Sampler() for c in active}
            for contender in active:
                if profile.warmup_seconds > 0:
                    await run_slice(
                        contender,
                        level,
                        profile.warmup_seconds,
                        per_slice_ops,
                        profile.op_timeout,
                        Sampler(),
                    )
            for index in range(profile.slices):
                shift = index % len(active) if active else 0
                for contender in active[shift:] + active[:shift]:
                    await run_slice(
                        contender,
                        level,
                        profile.slice_seconds,
                        per_slice_ops,
                        profile.op_timeout,
                        samplers[contender.name],
                    )
            for contender in active:
                result = samplers[contender.name].result(
                    level, contender_attr(contender, "bytes_per_op", 0)
                )
                per_level[contender.name].append(result)
                p50 = f"{result.latency.p50_ms:.3f} ms" if result.latency else "-"
                say(
                    f"{label}c={level} {contender.name}: {result.throughput:,.0f} ops/s, "
                    f"p50 {p50}, errors {result.errors}"
                )
    finally:
        for entry in reversed(ready):
            await _teardown(entry.contender)
    results = [
        ContenderResult(
            name=e.contender.name,
            group=e.contender.group,
            description=contender_attr(e.contender, "description", ""),
            status=e.status,
            reason=e.reason,
            levels=per_level[e.contender.name],
        )
        for e in entries
    ]
    return apply_baseline(results, baseline) if baseline else results
