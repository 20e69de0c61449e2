"""Sizes, waiting, timeouts and cancellation: no connection is ever leaked."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from pools import AcquireTimeout, ConnectFailed, ConnectionLost, PoolClosed, create_pool

if TYPE_CHECKING:
    from .conftest import Target


async def test_acquire_times_out_when_the_pool_is_exhausted(target: Target) -> None:
    pool = target.track(create_pool(target.config(max_size=1, acquire_timeout=0.05)))
    async with pool.lease(timeout=10):
        with pytest.raises(AcquireTimeout, match=r"within 0\.05s"):
            await pool.acquire()  # the config's default timeout
        with pytest.raises(AcquireTimeout):
            await pool.acquire(timeout=0.01)
        stats = pool.statistics()
        assert (stats.timeouts, stats.waiting, stats.in_use, stats.size) == (2, 0, 1, 1)
    async with pool.lease(timeout=10) as lease:  # the pool still works
        assert (await lease.query("SELECT 1")).rows == [(1,)]
    assert pool.statistics().leases_served == 2


async def test_cancelled_waiter_does_not_leak(target: Target) -> None:
    pool = target.track(create_pool(target.config(max_size=1)))
    held = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await target.wait_for(lambda: pool.statistics().waiting == 1, what="a waiter")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.statistics().waiting == 0
    await pool.release(held)
    async with pool.lease(timeout=5) as lease:
        assert lease.session_id == held.session_id
    stats = pool.statistics()
    assert (stats.in_use, stats.idle, stats.leases_served, stats.timeouts) == (0, 1, 2, 0)


async def test_waiter_cancelled_just_after_being_served_gives_the_connection_back(
    target: Target,
) -> None:
    pool = target.track(create_pool(target.config(max_size=1)))
    held = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await target.wait_for(lambda: pool.statistics().waiting == 1, what="a waiter")
    await pool.release(held)  # hands the connection to the waiter ...
    assert pool.statistics().in_use == 1
    waiter.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    stats = pool.statistics()
    assert (stats.in_use, stats.idle, stats.waiting) == (0, 1, 0)
    async with pool.lease(timeout=5) as lease:
        assert (await lease.query("SELECT 1")).rows == [(1,)]


async def test_task_cancelled_while_holding_a_lease_mid_query(target: Target) -> None:
    pool = target.track(create_pool(target.config(max_size=1)))

    async def worker() -> None:
        async with pool.lease() as lease:
            await lease.query(target.sleep_sql(30))

    task = asyncio.create_task(worker())
    await target.wait_for(lambda: target.busy_ids(), what="the query to start")
    (busy,) = await target.busy_ids()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The interrupted connection is discarded, not reused, and the pool carries on.
    stats = pool.statistics()
    assert (stats.in_use, stats.connections_closed) == (0, 1)
    async with pool.lease(timeout=5) as lease:
        assert lease.session_id != busy
        assert (await lease.query("SELECT 1")).rows == [(1,)]
    # MariaDB notices a vanished client only between 5 s slices of SLEEP(); end it now.
    await target.kill({busy})


async def test_fifty_tasks_share_five_connections(target: Target) -> None:
    pool = target.track(create_pool(target.config(min_size=0, max_size=5, acquire_timeout=30)))
    peak = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, len(await target.session_ids()))
            await asyncio.sleep(0.005)

    async def work(i: int) -> int:
        async with pool.lease() as lease:
            await lease.query(target.sleep_sql(0.02))
            result = await lease.query(f"SELECT {target.ph(1)} + 1", [i])
            return int(result.rows[0][0])

    sampler = asyncio.create_task(sample())
    results = await asyncio.gather(*(work(i) for i in range(50)))
    done.set()
    await sampler
    peak = max(peak, len(await target.session_ids()))
    assert sorted(results) == [i + 1 for i in range(50)]
    assert 1 <= peak <= 5  # seen on the server
    stats = pool.statistics()
    assert stats.leases_served == 50
    assert stats.connections_opened == 5 and stats.size == 5
    assert (stats.in_use, stats.waiting, stats.timeouts, stats.errors) == (0, 0, 0, 0)
    assert 0 < stats.acquire_wait_p50_ms <= stats.acquire_wait_p99_ms  # most tasks waited
    assert "size=5 idle=5 in_use=0" in repr(pool)


async def test_close_fails_waiters_and_later_acquires(target: Target) -> None:
    pool = target.track(create_pool(target.config(max_size=1)))
    held = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await target.wait_for(lambda: pool.statistics().waiting == 1, what="a waiter")
    closing = asyncio.create_task(pool.close(timeout=0.05))
    with pytest.raises(PoolClosed):
        await waiter
    await closing  # the lease was not returned within the grace period: terminated
    assert pool.closed and "closed" in repr(pool)
    with pytest.raises(ConnectionLost):
        await held.query("SELECT 1")
    await pool.release(held)
    with pytest.raises(PoolClosed):
        await pool.acquire()
    stats = pool.statistics()
    assert (stats.size, stats.in_use, stats.connections_closed) == (0, 0, 1)


async def test_start_opens_min_size_and_fails_clearly_when_the_database_is_down(
    target: Target,
) -> None:
    pool = target.track(create_pool(target.config(min_size=3, max_size=4)))
    await pool.start()
    assert len(await target.session_ids()) == 3
    assert pool.statistics().idle == 3

    down = target.track(create_pool(target.config(port=1, min_size=1, connect_timeout=2)))
    with pytest.raises(ConnectFailed, match=r"127\.0\.0\.1:1\b"):
        await down.start()
    assert down.closed
    lazy = target.track(create_pool(target.config(port=1, min_size=0, connect_timeout=2)))
    with pytest.raises(ConnectFailed):
        await lazy.acquire(timeout=5)
    stats = lazy.statistics()
    assert (stats.errors, stats.size, stats.in_use, stats.leases_served) == (1, 0, 0, 0)
