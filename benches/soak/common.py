"""What every in-process fault shares: start the fabric, load it, inject, settle, count.

A fault module supplies an :data:`Inject` coroutine; :func:`under_load` runs
it between a warm-up and a tail of load, then measures what
:class:`~benches.soak.model.FaultResult` reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benches.soak.load import Load, RssSampler, rss_mb
from benches.soak.model import FaultResult, RowCheck, SoakProfile
from benches.soak.stack import COMPONENT, Stack, count_rows, dbpool_stats
from fabric.workload.runtime import WorkloadRuntime

__all__ = ["FaultContext", "Injection", "Target", "check_rows", "judge", "under_load"]

Progress = Callable[[str], None]
Details = dict[str, int | float | str | bool | None]

#: ids written by the faults' own clients (never acknowledged, some must never exist)
FAULT_ID_BASE = 1_000_000_000


@dataclass
class FaultContext:
    stack: Stack
    profile: SoakProfile
    say: Progress


@dataclass
class Target:
    """What an injection gets: the running workload, its ingress port and the load."""

    ctx: FaultContext
    workload: WorkloadRuntime
    ingress_port: int | None
    load: Load
    table: str


@dataclass
class Injection:
    """What an injection reports back."""

    details: Details = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    #: per database: ids written inside transactions that never committed
    must_not_exist: dict[str, set[int]] = field(default_factory=dict)
    #: when the fault was lifted, if later than the end of the injection coroutine
    lifted_at: float | None = None
    #: MiB the process may grow by over its level before the injection, at its peak
    #: during the fault and once it settled; None: not judged
    memory_bound_mb: float | None = None


Inject = Callable[[Target], Awaitable[Injection]]


def pool_figures(stats: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """``(leases in use over all pools, transactions open)``, None when unknown."""
    if stats is None:
        return None, None
    databases = stats.get("databases") or {}
    in_use = sum(int(db.get("in_use", 0)) for db in databases.values())
    return in_use, int(stats.get("transactions_open", 0))


async def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    """Poll ``condition`` every 50 ms for up to ``seconds``; whether it came true."""
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


async def settle(workload: WorkloadRuntime, seconds: float) -> tuple[int | None, int | None]:
    """Wait up to ``seconds`` for every lease to return; the figures at the end."""
    deadline = time.monotonic() + seconds
    while True:
        in_use, txns = pool_figures(dbpool_stats(workload))
        if (in_use == 0 and txns == 0) or time.monotonic() > deadline:
            return in_use, txns
        await asyncio.sleep(0.05)


async def check_rows(
    stack: Stack, table: str, load: Load, must_not_exist: dict[str, set[int]]
) -> list[RowCheck]:
    checks: list[RowCheck] = []
    for db in load.databases:
        present = await stack.ids(db, table)
        acked = load.acknowledged[db]
        lost, dup, unacked, phantom = count_rows(
            present, acked, load.issued[db], must_not_exist.get(db, set())
        )
        checks.append(
            RowCheck(
                database=db,
                acknowledged=len(acked),
                present=len(present),
                lost=lost,
                duplicated=dup,
                unacknowledged_present=unacked,
                phantom=phantom,
            )
        )
    return checks


def judge(
    rows: Sequence[RowCheck],
    leases: int | None,
    txns: int | None,
    alive: bool,
    recovery: float | None,
    *,
    expect_recovery: bool = True,
) -> list[str]:
    """The problems every fault is judged on."""
    problems: list[str] = []
    for check in rows:
        if check.lost:
            problems.append(f"{check.database}: {check.lost} acknowledged rows lost")
        if check.duplicated:
            problems.append(f"{check.database}: {check.duplicated} rows duplicated")
        if check.phantom:
            problems.append(
                f"{check.database}: {check.phantom} rows of uncommitted transactions present"
            )
    if leases:
        problems.append(f"{leases} pool leases still in use after the fault settled")
    if txns:
        problems.append(f"{txns} transactions still open after the fault settled")
    if leases is None and alive:
        problems.append("dbpool published no statistics after the fault")
    if not alive:
        problems.append("the host died")
    if expect_recovery and alive and recovery is None:
        problems.append("no invocation succeeded after the fault")
    return problems


async def _probe_recovery(load: Load, since: float, seconds: float) -> None:
    """After the load stopped without a success since ``since``: keep trying a while."""
    deadline = time.monotonic() + seconds
    turn = 0
    while load.recovery_after(since) is None and time.monotonic() < deadline:
        await load.once(load.databases[turn % len(load.databases)])
        turn += 1
        await asyncio.sleep(0.1)


class LogCounter(logging.Handler):
    """Counts what the host logs at WARNING and above while a fault runs (instead of
    printing it), and keeps the first few distinct messages."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.warnings = 0
        self.tracebacks = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.warnings += 1
        if record.exc_info:
            self.tracebacks += 1
        message = record.getMessage().splitlines()[0][:120] if record.msg else ""
        if len(self.first) < 2 and message not in self.first:
            self.first.append(message)

    def __enter__(self) -> LogCounter:
        root = logging.getLogger()
        self._saved = root.handlers[:]
        root.handlers = [self]
        return self

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger().handlers = self._saved

    def details(self) -> Details:
        return {
            "host_log_warnings": self.warnings,
            "host_log_tracebacks": self.tracebacks,
            "host_log_first": " | ".join(self.first) or None,
        }


def _alive(workload: WorkloadRuntime) -> bool:
    try:
        workload.status()
    except Exception:
        return False
    return True


@dataclass
class _Run:
    name: str
    title: str
    table: str
    sampler: RssSampler
    logged: LogCounter
    started: float


async def under_load(
    ctx: FaultContext,
    name: str,
    title: str,
    inject: Inject,
    *,
    extra_services: Sequence[dict[str, Any]] = (),
    limits: dict[str, Any] | None = None,
) -> FaultResult:
    started = time.monotonic()
    table = await ctx.stack.new_table(name)
    sampler = RssSampler().start()
    with LogCounter() as logged:
        run = _Run(name, title, table, sampler, logged, started)
        return await _measure(ctx, run, inject, extra_services, limits)


async def _measure(
    ctx: FaultContext,
    run: _Run,
    inject: Inject,
    extra_services: Sequence[dict[str, Any]],
    limits: dict[str, Any] | None,
) -> FaultResult:
    profile, stack = ctx.profile, ctx.stack
    name, table, sampler = run.name, run.table, run.sampler
    rss_before: float | None = None
    async with stack.fabric(extra_services=extra_services, limits=limits) as (workload, port):

        async def invoke(args: list[str]) -> Any:
            return await workload.invoke(COMPONENT, None, args)

        load = Load(invoke, stack.databases, table, profile.workers)
        load.start()
        await asyncio.sleep(profile.warmup)
        rss_before = rss_mb()
        ctx.say(f"  {name}: injecting")
        target = Target(ctx, workload, port, load, table)
        try:
            injection = await inject(target)
        finally:
            lifted = time.monotonic()
        if injection.lifted_at is not None:
            lifted = injection.lifted_at
        await asyncio.sleep(profile.after)
        await load.stop()
        await _probe_recovery(load, lifted, profile.settle)
        leases, txns = await settle(workload, profile.settle)
        alive = _alive(workload)
        rss_final = rss_mb()
    # The samples are 20 ms apart: the readings taken in between count too.
    rss_peak = max(sampler.stop(), rss_before or 0.0, rss_final or 0.0)
    rows = await check_rows(stack, table, load, injection.must_not_exist)
    recovery = load.recovery_after(lifted)
    problems = judge(rows, leases, txns, alive, recovery) + injection.problems
    problems += _judge_memory(injection.memory_bound_mb, rss_before, rss_peak, rss_final)
    return FaultResult(
        name=name,
        title=run.title,
        outcome="failed" if problems else "held",
        problems=problems,
        invocations=load.invocations,
        acknowledged=load.acknowledged_count,
        failed=load.failed,
        first_error=load.first_error,
        rows=rows,
        lost=sum(r.lost for r in rows),
        duplicated=sum(r.duplicated for r in rows),
        leases_leaked=leases,
        transactions_open=txns,
        rss_before_mb=_round(rss_before),
        rss_peak_mb=_round(rss_peak),
        rss_final_mb=_round(rss_final),
        recovery_seconds=None if recovery is None else round(recovery, 3),
        host_alive=alive,
        duration_seconds=round(time.monotonic() - run.started, 2),
        details={**injection.details, **run.logged.details()},
    )


def _judge_memory(
    bound: float | None, before: float | None, peak: float, final: float | None
) -> list[str]:
    if bound is None or before is None:
        return []
    problems: list[str] = []
    if peak - before > bound:
        problems.append(
            f"peak RSS {peak:,.0f} MiB, {peak - before:,.0f} MiB over its level before the "
            f"fault (bound {bound:,.0f} MiB): memory is not bounded"
        )
    if final is not None and final - before > bound:
        problems.append(
            f"{final - before:,.0f} MiB still held once the fault settled (RSS {final:,.0f} MiB)"
        )
    return problems


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
