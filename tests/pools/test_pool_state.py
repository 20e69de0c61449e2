"""The sans-IO pool core, driven by hand: no event loop, no database, a fake clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pools import ConnectFailed, PoolClosed, PoolState
from pools._state import LIFETIME_JITTER


def make(**kw: float) -> PoolState[str]:
    args: dict[str, float] = dict(
        min_size=0, max_size=2, max_lifetime=100.0, idle_timeout=10.0, health_check_after=5.0
    )
    args.update(kw)
    return PoolState(rng=random.Random(7), **args)  # type: ignore[arg-type]


def fill(state: PoolState[str], n: int, now: float = 0.0) -> None:
    """Open n connections the way the I/O layer would."""
    for i in range(n):
        state._opening += 1  # the plan would have asked for them
        state.opened(f"c{i}", now)
    state.step(now)


def test_waiter_triggers_open_then_gets_the_new_connection() -> None:
    s = make()
    w = s.enqueue(0.0)
    plan = s.step(0.0)
    assert plan.open == 1 and not plan.served and s.opening == 1 and s.waiting == 1
    s.opened("conn-a", 0.1)
    plan = s.step(0.1)
    assert plan.served == [w] and w.slot is not None and w.slot.conn == "conn-a"
    assert not w.needs_check  # brand new
    assert (s.idle, s.in_use, s.opening, s.waiting) == (0, 1, 0, 0)


def test_waiters_are_served_first_come_first_served() -> None:
    s = make(max_size=1)
    fill(s, 1)
    holder = s.enqueue(0.0)
    s.step(0.0)
    assert holder.slot is not None
    w1, w2 = s.enqueue(1.0), s.enqueue(1.0)
    plan = s.step(1.0)
    assert plan.open == 0 and not plan.served  # at max_size: they wait
    s.release(holder.slot, 2.0, reuse=True)
    plan = s.step(2.0)
    assert plan.served == [w1] and not w2.done
    assert s.waiting == 1


def test_most_recently_released_connection_is_reused_first() -> None:
    s = make(max_size=3)
    fill(s, 3)
    ws = [s.enqueue(0.0) for _ in range(3)]
    s.step(0.0)
    slots = [w.slot for w in ws]
    assert all(slots)
    for i, slot in enumerate(slots):
        assert slot is not None
        s.release(slot, 1.0 + i, reuse=True)
    w = s.enqueue(4.0)
    s.step(4.0)
    assert w.slot is slots[-1]


def test_never_more_than_max_size_connections() -> None:
    s = make(max_size=3)
    for _ in range(10):
        s.enqueue(0.0)
    plan = s.step(0.0)
    assert plan.open == 3 and s.opening == 3 and s.waiting == 10
    assert s.step(0.0).open == 0


def test_min_size_is_opened_and_refilled() -> None:
    s = make(min_size=2, max_size=4)
    assert s.step(0.0).open == 2
    s.opened("a", 0.0)
    s.opened("b", 0.0)
    assert s.step(0.0).open == 0
    w = s.enqueue(1.0)
    s.step(1.0)
    assert w.slot is not None
    s.release(w.slot, 2.0, reuse=False)  # e.g. discarded after ConnectionLost
    plan = s.step(2.0)
    assert [slot.conn for slot in plan.close] == [w.slot.conn]
    assert plan.open == 1  # back to min_size


def test_abandoning_a_served_waiter_returns_its_connection() -> None:
    """A waiter cancelled after it was handed a slot must not leak it."""
    s = make(max_size=1)
    fill(s, 1)
    w = s.enqueue(0.0)
    s.step(0.0)
    assert w.slot is not None and s.in_use == 1
    s.abandon(w)
    assert (s.in_use, s.idle) == (0, 1)
    again = s.enqueue(1.0)
    s.step(1.0)
    assert again.slot is not None


def test_timed_out_waiter_leaves_the_queue_and_is_counted() -> None:
    s = make(max_size=1)
    fill(s, 1)
    holder = s.enqueue(0.0)
    s.step(0.0)
    w = s.enqueue(0.0)
    s.step(0.0)
    s.abandon(w, timed_out=True)
    assert s.waiting == 0 and s.timeouts == 1 and s.stats("x").timeouts == 1
    assert holder.slot is not None
    s.release(holder.slot, 1.0, reuse=True)
    assert s.step(1.0).served == []  # nobody left to serve
    assert s.idle == 1


def test_lifetime_is_jittered_per_connection() -> None:
    s = make(max_size=50, max_lifetime=1000.0)
    expiries = []
    for i in range(50):
        s._opening += 1
        expiries.append(s.opened(f"c{i}", 0.0).expires_at)
    assert all(1000.0 * (1 - LIFETIME_JITTER) <= e <= 1000.0 for e in expiries)
    assert len(set(expiries)) == 50  # no synchronized expiry


def test_expired_idle_connection_is_closed_and_replaced_for_a_waiter() -> None:
    s = make(max_lifetime=10.0)
    fill(s, 1)
    (slot,) = s._idle
    assert s.next_deadline(1.0) == slot.expires_at
    w = s.enqueue(slot.expires_at)
    plan = s.step(slot.expires_at)
    assert plan.close == [slot] and plan.open == 1 and not w.done
    assert s.connections_closed == 1


def test_connection_past_its_lifetime_is_closed_on_release() -> None:
    s = make(max_lifetime=10.0)
    fill(s, 1)
    w = s.enqueue(0.0)
    s.step(0.0)
    assert w.slot is not None
    s.release(w.slot, 20.0, reuse=True)  # held across its expiry: not interrupted
    plan = s.step(20.0)
    assert plan.close == [w.slot] and s.idle == 0


def test_idle_timeout_closes_only_above_min_size_oldest_first() -> None:
    s = make(min_size=1, max_size=3, idle_timeout=10.0, max_lifetime=1000.0)
    fill(s, 3)
    ws = [s.enqueue(0.0) for _ in range(3)]
    s.step(0.0)
    for t, w in zip((1.0, 2.0, 3.0), ws, strict=True):
        assert w.slot is not None
        s.release(w.slot, t, reuse=True)
    assert s.step(5.0).close == []
    assert s.next_deadline(5.0) == 11.0
    plan = s.step(12.0)  # the two released at t=1 and t=2 have idled for 10s
    assert [p.conn for p in plan.close] == [ws[0].slot.conn, ws[1].slot.conn]  # type: ignore[union-attr]
    plan = s.step(100.0)
    assert plan.close == [] and s.idle == 1  # min_size stays


def test_health_check_after_idling_or_after_a_dead_sibling() -> None:
    s = make(health_check_after=5.0)
    fill(s, 1)
    w = s.enqueue(1.0)
    s.step(1.0)
    assert w.slot is not None and not w.needs_check
    s.release(w.slot, 2.0, reuse=True)
    w = s.enqueue(8.0)
    s.step(8.0)
    assert w.slot is not None and w.needs_check  # idle 6s >= 5s
    s.release(w.slot, 9.0, reuse=True)
    s.mark_suspect(9.5)  # another lease found its connection dead
    w = s.enqueue(9.6)
    s.step(9.6)
    assert w.needs_check


def test_failed_open_fails_the_oldest_waiter_and_backs_off_min_size() -> None:
    s = make(min_size=1, max_size=2)
    w1 = s.enqueue(0.0)
    plan = s.step(0.0)
    assert plan.open == 1
    s.open_failed(0.0, ConnectFailed("down"))
    plan = s.step(0.0)
    assert plan.served == [w1] and isinstance(w1.error, ConnectFailed)
    assert plan.open == 0  # min_size refill waits for the backoff
    assert s.errors == 1
    deadline = s.next_deadline(0.0)
    assert deadline is not None and deadline > 0.0
    assert s.step(deadline).open == 1


def test_close_fails_waiters_and_closes_idle() -> None:
    s = make(max_size=1)
    fill(s, 1)
    holder = s.enqueue(0.0)
    s.step(0.0)
    w = s.enqueue(0.0)
    s.step(0.0)
    s.close()
    plan = s.step(1.0)
    assert plan.served == [w] and isinstance(w.error, PoolClosed)
    with pytest.raises(PoolClosed):
        s.enqueue(1.0)
    assert holder.slot is not None
    s.release(holder.slot, 2.0, reuse=True)  # comes back after close: closed
    assert s.step(2.0).close == [holder.slot]
    assert s.next_deadline(2.0) is None


def test_expire_all_retires_idle_now_and_lent_on_release() -> None:
    s = make(max_size=2)
    fill(s, 2)
    w = s.enqueue(0.0)
    s.step(0.0)
    s.expire_all()
    plan = s.step(1.0)
    assert len(plan.close) == 1 and s.idle == 0
    assert w.slot is not None
    s.release(w.slot, 2.0, reuse=True)
    assert s.step(2.0).close == [w.slot]


def test_stats_percentiles_and_counters() -> None:
    s = make(max_size=2)
    fill(s, 2)
    for ms in range(1, 101):
        s.lease_started(ms / 1000.0)
    s.statement_errors += 2
    stats = s.stats("postgres")
    assert stats.acquire_wait_p50_ms == pytest.approx(50.0)
    assert stats.acquire_wait_p99_ms == pytest.approx(99.0)
    assert (stats.leases_served, stats.size, stats.idle, stats.in_use) == (100, 2, 2, 0)
    assert (stats.connections_opened, stats.statement_errors, stats.max_size) == (2, 2, 2)
    assert repr(s) == "<PoolState idle=2 in_use=0 opening=0 waiting=0>"


# -- invariants under random operation sequences -------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["enqueue", "open_ok", "open_fail", "release", "discard", "abandon", "tick"]
        ),
        st.integers(0, 7),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(OPS, st.integers(0, 3), st.integers(1, 4))
def test_invariants_hold_for_any_sequence(
    ops: list[tuple[str, int]], min_size: int, max_size: int
) -> None:
    min_size = min(min_size, max_size)
    s = make(min_size=min_size, max_size=max_size, max_lifetime=30.0, idle_timeout=7.0)
    now = 0.0
    waiters = []
    opens = 0
    closed_conns: set[str] = set()
    live_conns: set[str] = set()
    n = 0
    for op, arg in ops:
        now += 1.0
        if op == "enqueue":
            waiters.append(s.enqueue(now))
        elif op == "open_ok" and opens:
            opens -= 1
            n += 1
            s.opened(f"c{n}", now)
            live_conns.add(f"c{n}")
        elif op == "open_fail" and opens:
            opens -= 1
            s.open_failed(now, ConnectFailed("x"))
        elif op in ("release", "discard", "abandon"):
            served = [w for w in waiters if w.slot is not None]
            if served:
                w = served[arg % len(served)]
                if op == "abandon":
                    s.abandon(w)
                else:
                    assert w.slot is not None
                    s.release(w.slot, now, reuse=op == "release")
                waiters.remove(w)
        elif op == "tick":
            now += arg * 3.0
        plan = s.step(now)
        opens += plan.open
        for slot in plan.close:
            assert slot.conn not in closed_conns  # closed exactly once
            closed_conns.add(slot.conn)
            live_conns.discard(slot.conn)
        waiters = [w for w in waiters if w.error is None]
        # Invariants.
        assert s.opening == opens
        assert s.idle + s.in_use + s.opening <= max_size
        assert not (s.waiting and s.idle)  # nobody waits while a connection is idle
        assert {x.conn for x in s._idle}.isdisjoint({x.conn for x in s._in_use})
        assert {x.conn for x in s._idle} | {x.conn for x in s._in_use} == live_conns
        assert s.connections_opened - s.connections_closed == s.idle + s.in_use
        assert s.in_use == sum(1 for w in waiters if w.slot is not None)


def test_take_idle_is_the_fast_path_only_when_no_decision_is_due() -> None:
    s = make(max_size=2)
    fill(s, 2)
    slot = s.take_idle(1.0)
    assert slot is not None and (s.idle, s.in_use) == (1, 1)
    s.release(slot, 2.0, reuse=True)
    # nobody waits and the timer (at 5.0) comes before this slot needs attention
    assert s.quiet_return(slot, 5.0, 2.0)
    assert not s.quiet_return(slot, 50.0, 2.0)  # its idle timeout (12.0) comes first
    waiter = s.enqueue(2.0)
    assert s.take_idle(2.0) is None  # someone queued first: the step decides
    s.step(2.0)
    assert waiter.slot is not None
    assert s.take_idle(10.0) is None  # idle longer than health_check_after: checked
    s.expire_all()
    assert s.take_idle(2.1) is None  # an old generation is retired, not lent
    s.close()
    assert s.take_idle(2.2) is None
