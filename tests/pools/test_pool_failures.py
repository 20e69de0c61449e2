"""Dead connections, lifetime and idle timeout: the pool notices, reports and recovers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from pools import ConnectFailed, ConnectionLost, Lease, create_pool

if TYPE_CHECKING:
    from .conftest import Proxy, Target


async def test_connections_killed_under_load(target: Target) -> None:
    pool = target.track(create_pool(target.config(min_size=0, max_size=6)))
    warm = [await pool.acquire() for _ in range(6)]
    for lease in warm:
        await pool.release(lease)
    assert pool.statistics().idle == 6

    async def long_query() -> BaseException | None:
        async with pool.lease() as lease:
            try:
                await lease.query(target.sleep_sql(30))
            except ConnectionLost as exc:
                assert not lease.usable and not lease.in_transaction
                with pytest.raises(ConnectionLost):  # the lease stays unusable
                    await lease.query("SELECT 1")
                return exc
        return None

    running = [asyncio.create_task(long_query()) for _ in range(4)]
    await target.wait_for(
        lambda: _count_at_least(target, 4), what="four queries running on the server"
    )
    assert pool.statistics().in_use == 4
    await target.kill(await target.session_ids())  # all six, busy and idle

    outcomes = await asyncio.gather(*running)
    assert all(isinstance(exc, ConnectionLost) for exc in outcomes), outcomes
    assert all("connection lost" in str(exc) for exc in outcomes)
    stats = pool.statistics()
    assert (stats.in_use, stats.errors) == (0, 4)

    async def short_query(i: int) -> int:
        async with pool.lease(timeout=10) as lease:
            return int((await lease.query(f"SELECT {target.ph(1)} * 2", [i])).rows[0][0])

    assert await asyncio.gather(*(short_query(i) for i in range(10))) == [i * 2 for i in range(10)]
    stats = pool.statistics()
    # 4 lost mid-query + 2 idle ones found dead before being handed out.
    assert (stats.in_use, stats.waiting, stats.errors) == (0, 0, 6)
    assert stats.leases_served == 6 + 4 + 10
    assert stats.connections_closed >= 6
    assert stats.connections_opened - stats.connections_closed == stats.size

    # A killed session can linger on the server for a moment after its socket closed.
    async def server_matches_pool() -> bool:
        return len(await target.session_ids()) == pool.statistics().size

    await target.wait_for(server_matches_pool, what="the server's sessions = the pool's size")


async def _count_at_least(target: Target, n: int) -> bool:
    return len(await target.busy_ids()) >= n


async def test_connection_killed_while_idle_is_never_handed_out(target: Target) -> None:
    pool = target.track(create_pool(target.config(max_size=2, health_check_after=0.01)))
    async with pool.lease() as lease:
        dead = lease.session_id
    await target.kill({dead})
    await asyncio.sleep(0.02)  # idle longer than health_check_after
    async with pool.lease(timeout=10) as lease:
        assert lease.session_id != dead
        assert (await lease.query("SELECT 1")).rows == [(1,)]
    stats = pool.statistics()
    assert (stats.errors, stats.connections_opened, stats.connections_closed) == (1, 2, 1)


async def test_database_outage_and_recovery_through_a_proxy(target: Target, proxy: Proxy) -> None:
    port = proxy.port
    pool = create_pool(target.config(port=port, min_size=2, max_size=3, connect_timeout=5))
    try:
        await pool.start()
        busy = await pool.acquire()
        in_flight = asyncio.create_task(busy.query(target.sleep_sql(30)))
        await target.wait_for(lambda: _count_at_least(target, 1), what="the query to start")

        proxy.refuse = True  # the database goes away ...
        proxy.cut()
        with pytest.raises(ConnectionLost):
            await in_flight
        await pool.release(busy)
        with pytest.raises(ConnectFailed, match=rf"127\.0\.0\.1:{port}\b"):
            await pool.acquire(timeout=10)  # dead idle connection discarded, reconnect refused
        assert pool.statistics().size == 0

        proxy.refuse = False  # ... and comes back: the pool refills min_size by itself
        await target.wait_for(lambda: pool.statistics().idle == 2, what="min_size refilled")
        async with pool.lease(timeout=10) as lease:
            assert (await lease.query("SELECT 1")).rows == [(1,)]
        stats = pool.statistics()
        assert stats.errors >= 3  # lost mid-query, dead while idle, refused connect(s)
        assert (stats.in_use, stats.waiting, stats.size) == (0, 0, 2)
        assert stats.connections_opened - stats.connections_closed == stats.size
    finally:
        await pool.close(timeout=5)
        proxy.cut()
        # Sessions cut off mid-query end on the server only when their sleep does.
        await target.kill(await target.session_ids())


async def test_health_check_times_out_on_a_silent_connection(target: Target, proxy: Proxy) -> None:
    """A partition that swallows packets (no reset) is caught by the ping's timeout."""
    pool = target.track(
        create_pool(target.config(port=proxy.port, health_check_after=0.01, connect_timeout=0.5))
    )
    async with pool.lease(timeout=10) as lease:
        silent = lease.session_id
    proxy.stall()
    await asyncio.sleep(0.02)  # idle longer than health_check_after
    async with pool.lease(timeout=10) as lease:
        assert lease.session_id != silent
        assert (await lease.query("SELECT 1")).rows == [(1,)]
    stats = pool.statistics()
    assert (stats.errors, stats.connections_opened, stats.connections_closed) == (1, 2, 1)
    assert stats.acquire_wait_p99_ms >= 400  # the acquire that waited out the ping


async def test_max_lifetime_replaces_connections(target: Target) -> None:
    pool = target.track(create_pool(target.config(min_size=1, max_size=2, max_lifetime=0.3)))
    await pool.start()
    held = await pool.acquire()  # held past its lifetime: not interrupted
    first = held.session_id
    await asyncio.sleep(0.4)
    assert (await held.query("SELECT 1")).rows == [(1,)]
    await pool.release(held)  # ... but closed when it comes back
    await target.wait_for(lambda: _gone(target, first), what="the expired session to close")

    async def replaced() -> bool:
        async with pool.lease(timeout=10) as lease:
            return lease.session_id != first

    assert await replaced()
    stats = pool.statistics()
    assert stats.connections_closed >= 1 and stats.errors == 0
    # Idle connections expire too, without any traffic (the maintenance timer).
    opened = stats.connections_opened
    await target.wait_for(
        lambda: pool.statistics().connections_opened >= opened + 1, what="an idle expiry"
    )
    assert pool.statistics().errors == 0


async def _gone(target: Target, sid: int) -> bool:
    return sid not in await target.session_ids()


async def test_idle_timeout_shrinks_to_min_size(target: Target) -> None:
    pool = target.track(create_pool(target.config(min_size=1, max_size=3, idle_timeout=0.2)))
    leases: list[Lease] = [await pool.acquire() for _ in range(3)]
    assert len(await target.session_ids()) == 3
    for lease in leases:
        await pool.release(lease)
    assert pool.statistics().idle == 3
    await target.wait_for(lambda: pool.statistics().size == 1, what="shrinking to min_size")
    await target.wait_for(lambda: _count_is(target, 1), what="the server to see one session")
    stats = pool.statistics()
    assert (stats.connections_opened, stats.connections_closed, stats.errors) == (3, 2, 0)
    async with pool.lease() as lease:
        assert (await lease.query("SELECT 1")).rows == [(1,)]


async def _count_is(target: Target, n: int) -> bool:
    return len(await target.session_ids()) == n
