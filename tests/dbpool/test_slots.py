"""The session primitives in services/dbpool/slots.py, without a connection."""

from __future__ import annotations

import asyncio

import pytest

from services.dbpool.slots import Slots, WaitTimer, within


async def test_a_wait_timer_cuts_a_wait_that_lasts_past_its_timeout() -> None:
    timer = WaitTimer(0.05)
    assert await timer.bound(asyncio.sleep(0, result="quick")) == "quick"
    with pytest.raises(TimeoutError):
        await timer.bound(asyncio.sleep(10))
    assert timer.expired
    timer.cancel()


async def test_a_wait_timer_counts_each_wait_from_its_own_start() -> None:
    # Many short waits in a row add up to more than the timeout; none alone does.
    timer = WaitTimer(1.0)
    for _ in range(5):
        await timer.bound(asyncio.sleep(0.3))
    assert not timer.expired
    timer.cancel()


async def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    timer = WaitTimer(10)
    task = asyncio.ensure_future(timer.bound(asyncio.sleep(10)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not timer.expired
    timer.cancel()


async def _ready(value: str) -> str:
    return value  # finishes in its first step: nothing to wait for


async def test_a_wait_that_needs_no_waiting_arms_no_timer() -> None:
    timer = WaitTimer(10)
    assert await timer.bound(_ready("now")) == "now"
    assert timer._timer is None
    assert await timer.bound(asyncio.sleep(0, result="later")) == "later"
    assert timer._timer is not None  # a wait that suspended armed it
    timer.cancel()
    assert await within(_ready("now"), 0.01) == "now"


async def test_within_cuts_a_wait_after_its_first_step() -> None:
    with pytest.raises(TimeoutError):
        await within(asyncio.sleep(10), 0.05)
    assert await within(asyncio.sleep(0.01, result="in time"), 5.0) == "in time"


async def test_a_cancelled_wait_reaches_the_awaitable() -> None:
    # The awaitable resumed after its first step still sees the cancellation
    # (its cleanup runs) and the cancel stays a cancel, not a timeout.
    seen: list[str] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    timer = WaitTimer(10)
    for wait in (timer.bound(waits()), within(waits(), 10)):
        task = asyncio.ensure_future(wait)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert seen == ["cancelled", "cancelled"]
    assert not timer.expired
    timer.cancel()


async def test_slots_hand_a_given_slot_to_the_oldest_waiter() -> None:
    slots = Slots(1)
    assert slots.take_now()
    order: list[int] = []

    async def waiter(n: int) -> None:
        await slots.take()
        order.append(n)

    tasks = [asyncio.ensure_future(waiter(n)) for n in range(3)]
    await asyncio.sleep(0)
    for _ in range(3):
        slots.give()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
