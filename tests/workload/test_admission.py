"""Per-component admission: concurrency limit, bounded wait queue, counters, latencies."""

from __future__ import annotations

import asyncio

import pytest

from fabric.workload import Admission, AdmissionCore, Overloaded, ShuttingDown
from fabric.workload.admission import Decision, summarize


def test_core_decisions() -> None:
    core = AdmissionCore("c", limit=1, queue=2)
    assert core.arrive() == (Decision.RUN, 0)
    assert core.arrive() == (Decision.WAIT, 1)
    assert core.arrive() == (Decision.WAIT, 2)
    assert core.arrive() == (Decision.REJECT, 3)
    assert core.abandon(1) is True and core.abandon(1) is False
    assert core.finish() == 2  # the slot passes straight to the oldest waiter
    assert core.running == 1
    assert core.finish() is None
    assert core.running == 0
    with pytest.raises(RuntimeError, match="finish\\(\\) without a running invocation"):
        core.finish()
    assert repr(core) == "<AdmissionCore 'c' running=0/1 waiting=0/2>"


def test_core_keeps_fifo_order_even_with_a_free_slot_pending() -> None:
    core = AdmissionCore("c", limit=2, queue=4)
    core.arrive(), core.arrive()
    assert core.arrive()[0] is Decision.WAIT
    # a newcomer never overtakes a queued waiter
    assert core.arrive()[0] is Decision.WAIT


def test_summarize_nearest_rank() -> None:
    summary = summarize([float(i) for i in range(100, 0, -1)])
    assert (summary.count, summary.p50, summary.p99, summary.max) == (100, 50.0, 99.0, 100.0)
    assert summarize([]).p50 is None


async def hold(admission: Admission, release: asyncio.Event, log: list[str], name: str) -> None:
    async with admission.slot():
        log.append(f"in {name}")
        await release.wait()
    log.append(f"out {name}")


async def test_overflow_is_an_immediate_error_not_a_hang() -> None:
    admission = Admission("shop/handler", limit=2, queue=1)
    release = asyncio.Event()
    log: list[str] = []
    async with asyncio.timeout(10):
        holders = [asyncio.create_task(hold(admission, release, log, n)) for n in "ab"]
        waiter = asyncio.create_task(hold(admission, release, log, "c"))
        await asyncio.sleep(0)
        assert log == ["in a", "in b"]
        stats = admission.statistics()
        assert (stats.in_flight, stats.waiting) == (2, 1)

        with pytest.raises(Overloaded) as info:
            async with admission.slot():
                pytest.fail("must not run")
        assert str(info.value) == (
            "component 'shop/handler' is overloaded: 2 invocations running and 1 waiting "
            "(concurrency = 2, queue = 1)"
        )
        release.set()
        await asyncio.gather(*holders, waiter)
    assert log.index("in c") > log.index("out a")
    stats = admission.statistics()
    assert (stats.invocations, stats.rejected, stats.errors) == (3, 1, 0)
    assert (stats.in_flight, stats.waiting) == (0, 0)
    assert stats.latency.count == 3 and stats.wait.count == 3
    assert repr(admission) == (
        "<Admission 'shop/handler' in_flight=0/2 waiting=0/1 invocations=3 errors=0 rejected=1>"
    )


async def test_zero_queue_rejects_as_soon_as_the_limit_is_reached() -> None:
    admission = Admission("c", limit=1, queue=0)
    release = asyncio.Event()
    async with asyncio.timeout(10):
        task = asyncio.create_task(hold(admission, release, [], "a"))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            async with admission.slot():
                pass
        release.set()
        await task


async def test_waiters_run_in_arrival_order() -> None:
    admission = Admission("c", limit=1, queue=10)
    release = asyncio.Event()
    log: list[str] = []
    async with asyncio.timeout(10):
        first = asyncio.create_task(hold(admission, release, log, "0"))
        await asyncio.sleep(0)
        others = []
        for n in "12345":
            others.append(asyncio.create_task(hold(admission, release, log, n)))
            await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, *others)
    assert [entry for entry in log if entry.startswith("in")] == [f"in {n}" for n in "012345"]


async def test_cancelled_waiters_leave_the_queue() -> None:
    admission = Admission("c", limit=1, queue=1)
    release = asyncio.Event()
    log: list[str] = []
    async with asyncio.timeout(10):
        holder = asyncio.create_task(hold(admission, release, log, "a"))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(hold(admission, release, log, "b"))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.wait({waiter})
        assert admission.statistics().waiting == 0
        late = asyncio.create_task(hold(admission, release, log, "c"))  # the queue has room
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(holder, late)
    assert "in b" not in log and "in c" in log
    assert admission.statistics().in_flight == 0


async def test_a_waiter_cancelled_right_after_its_turn_passes_the_slot_on() -> None:
    admission = Admission("c", limit=1, queue=2)
    gate = asyncio.Event()
    log: list[str] = []
    waiters: list[asyncio.Task[None]] = []

    async def first() -> None:
        async with admission.slot():
            await gate.wait()
        # leaving the block handed the slot to "b"; cancel "b" before it could run
        waiters[0].cancel()

    async with asyncio.timeout(10):
        holder = asyncio.create_task(first())
        await asyncio.sleep(0)
        waiters.append(asyncio.create_task(hold(admission, asyncio.Event(), log, "b")))
        waiters.append(asyncio.create_task(hold(admission, gate, log, "c")))
        await asyncio.sleep(0)
        gate.set()
        await asyncio.wait({holder, *waiters})
    assert waiters[0].cancelled()
    assert log == ["in c", "out c"]
    assert admission.statistics().in_flight == 0


async def test_errors_and_latency_are_recorded() -> None:
    ticks = iter([0.0, 0.5, 2.0, 10.0, 10.0, 10.25])
    admission = Admission("c", limit=1, queue=0, clock=lambda: next(ticks))
    with pytest.raises(ZeroDivisionError):
        async with admission.slot():
            1 / 0  # noqa: B018
    async with admission.slot():
        pass
    stats = admission.statistics()
    assert (stats.invocations, stats.errors) == (2, 1)
    assert stats.latency.max == 2.0 and stats.latency.p50 == 0.25
    assert stats.wait.max == 0.5


async def test_close_refuses_new_invocations_and_wait_idle_waits_for_the_rest() -> None:
    admission = Admission("c", limit=1, queue=1)
    release = asyncio.Event()
    log: list[str] = []
    async with asyncio.timeout(10):
        await admission.wait_idle()  # idle from the start
        running = asyncio.create_task(hold(admission, release, log, "a"))
        queued = asyncio.create_task(hold(admission, release, log, "b"))
        await asyncio.sleep(0)
        admission.close()
        with pytest.raises(ShuttingDown, match="component 'c' takes no new invocations"):
            async with admission.slot():
                pass
        idle = asyncio.create_task(admission.wait_idle())
        await asyncio.sleep(0.01)
        assert not idle.done()
        release.set()
        await idle
        assert running.done() and queued.done()
    assert log == ["in a", "out a", "in b", "out b"]
