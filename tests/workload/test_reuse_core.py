"""ReuseCore: the instance pool's bookkeeping, without a loop or a clock."""

from __future__ import annotations

import asyncio

import pytest

from fabric.engine import DeadlineExceeded, EngineError, GuestExit, GuestTrap
from fabric.workload.reuse import ReuseCore, retire_reason


def core(max_invocations: int = 3, pool_size: int = 2, idle: float = 10.0) -> ReuseCore[str]:
    return ReuseCore("job", max_invocations=max_invocations, pool_size=pool_size, idle=idle)


def test_empty_pool_starts_fresh_instances() -> None:
    c = core()
    assert c.take() is None
    c.start()
    assert (c.busy, c.started, c.warm) == (1, 1, 0)


def test_clean_return_goes_warm_and_is_taken_again() -> None:
    c = core()
    c.start()
    assert c.give_back("a", 1, now=0.0) is None
    assert (c.busy, c.warm) == (0, 1)
    assert c.take() == ("a", 1)
    assert (c.busy, c.warm, c.reused) == (1, 0, 1)


def test_most_recently_used_goes_out_first() -> None:
    c = core(pool_size=3)
    for _ in range(3):
        c.start()
    c.give_back("a", 1, now=0.0)
    c.give_back("b", 1, now=1.0)
    c.give_back("c", 1, now=2.0)
    assert [c.take(), c.take(), c.take()] == [("c", 1), ("b", 1), ("a", 1)]
    assert c.take() is None


def test_a_taken_instance_is_never_handed_out_twice() -> None:
    c = core(pool_size=4)
    for _ in range(2):
        c.start()
    c.give_back("a", 1, now=0.0)
    c.give_back("b", 1, now=0.0)
    first, second = c.take(), c.take()
    assert first is not None and second is not None and first[0] != second[0]
    assert c.take() is None
    assert c.busy == 2


def test_max_invocations_retires_on_return() -> None:
    c = core(max_invocations=2)
    c.start()
    assert c.give_back("a", 1, now=0.0) is None
    c.take()
    assert c.give_back("a", 2, now=1.0) == "max-invocations"
    assert c.warm == 0
    assert c.retired == {"max-invocations": 1}


def test_pool_size_caps_warm_instances() -> None:
    c = core(pool_size=2)
    for _ in range(3):
        c.start()
    assert c.give_back("a", 1, now=0.0) is None
    assert c.give_back("b", 1, now=0.0) is None
    assert c.give_back("c", 1, now=0.0) == "pool-full"
    assert (c.warm, c.busy) == (2, 0)
    assert c.statistics().reasons == {"pool-full": 1}


def test_retire_counts_reasons_in_order() -> None:
    c = core()
    for reason in ("exit", "trap", "deadline", "trap"):
        c.start()
        c.retire(reason)
    stats = c.statistics()
    assert stats.busy == 0
    assert stats.retired == 4
    assert list(stats.reasons.items()) == [("trap", 2), ("deadline", 1), ("exit", 1)]


def test_idle_instances_expire_oldest_first() -> None:
    c = core(pool_size=3, idle=10.0)
    for _ in range(3):
        c.start()
    c.give_back("a", 1, now=0.0)
    c.give_back("b", 1, now=5.0)
    c.give_back("c", 1, now=8.0)
    assert c.next_expiry() == 10.0
    assert c.expire(9.9) == []
    assert c.expire(15.0) == ["a", "b"]
    assert c.next_expiry() == 18.0
    assert c.take() == ("c", 1)
    assert c.next_expiry() is None
    assert c.retired == {"idle": 2}


def test_close_hands_back_warm_and_retires_busy_on_return() -> None:
    c = core(pool_size=3)
    for _ in range(3):
        c.start()
    c.give_back("a", 1, now=0.0)
    c.give_back("b", 1, now=0.0)
    assert sorted(c.close()) == ["a", "b"]
    assert c.take() is None
    assert c.give_back("c", 1, now=1.0) == "stopped"
    assert c.statistics().reasons == {"stopped": 3}
    assert (c.warm, c.busy) == (0, 0)


def test_statistics_and_repr() -> None:
    c = core(max_invocations=5, pool_size=2, idle=3.0)
    c.start()
    c.give_back("a", 1, now=0.0)
    s = c.statistics()
    assert (s.max_invocations, s.pool_size, s.idle) == (5, 2, 3.0)
    assert (s.warm, s.busy, s.started, s.reused, s.retired) == (1, 0, 1, 0, 0)
    assert "warm=1/2" in repr(c) and "started=1" in repr(c)


@pytest.mark.parametrize(
    ("kwargs"),
    [
        {"max_invocations": 0, "pool_size": 1, "idle": 1.0},
        {"max_invocations": 1, "pool_size": 0, "idle": 1.0},
        {"max_invocations": 1, "pool_size": 1, "idle": 0.0},
    ],
)
def test_bounds(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need max_invocations"):
        ReuseCore("job", **kwargs)  # type: ignore[arg-type]


def test_retire_reasons() -> None:
    assert retire_reason(asyncio.CancelledError()) == "cancelled"
    assert retire_reason(DeadlineExceeded("late")) == "deadline"
    assert retire_reason(GuestExit(3)) == "exit"
    assert retire_reason(GuestTrap("boom")) == "trap"
    assert retire_reason(EngineError("x")) == "error"
    assert retire_reason(ValueError("x")) == "error"
