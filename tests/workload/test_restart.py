"""Restart policy math and the service lifecycle table (sans-IO, deterministic)."""

from __future__ import annotations

import random

import pytest

from fabric.workload import InvalidTransition, RestartPolicy, RestartTracker, ServiceMachine, State
from fabric.workload.lifecycle import TRANSITIONS, Event
from fabric.workload.restart import Done, GiveUp, Restart


def policy(**overrides: object) -> RestartPolicy:
    base: dict[str, object] = dict(
        initial_backoff=0.1, max_backoff=1.0, multiplier=2.0, jitter=0.0,
        max_restarts=100, window=60.0, reset_after=30.0,
    )  # fmt: skip
    base.update(overrides)
    return RestartPolicy(**base)  # type: ignore[arg-type]


def state(machine: ServiceMachine) -> State:
    """The machine's state, read through a call so that type checkers do not narrow it."""
    return machine.state


def reason(machine: ServiceMachine) -> str | None:
    return machine.failure_reason


def crash_repeatedly(tracker: RestartTracker, times: int, *, step: float = 0.01) -> list[object]:
    decisions: list[object] = []
    now = 0.0
    for _ in range(times):
        tracker.started(now)
        now += step
        decision = tracker.exited(now, failed=True)
        decisions.append(decision)
        if isinstance(decision, Restart):
            now += decision.delay
    return decisions


def test_backoff_grows_by_the_multiplier_and_is_capped() -> None:
    decisions = crash_repeatedly(RestartTracker(policy()), 7)
    assert decisions == [
        Restart(0.1, 1), Restart(0.2, 2), Restart(0.4, 3), Restart(0.8, 4),
        Restart(1.0, 5), Restart(1.0, 6), Restart(1.0, 7),
    ]  # fmt: skip


def test_jitter_is_drawn_below_the_base_from_the_injected_random() -> None:
    tracker = RestartTracker(policy(jitter=0.5), random.Random(7).random)
    decisions = crash_repeatedly(tracker, 6)
    draws = random.Random(7)
    bases = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    expected = [base * (1 - 0.5 * draws.random()) for base in bases]
    delays = [d.delay for d in decisions if isinstance(d, Restart)]
    assert delays == pytest.approx(expected)
    assert all(b * 0.5 <= d <= b for b, d in zip(bases, delays, strict=True))
    # the same seed gives the same schedule
    again = crash_repeatedly(RestartTracker(policy(jitter=0.5), random.Random(7).random), 6)
    assert again == decisions


def test_crash_loop_gives_up_after_max_restarts_within_the_window() -> None:
    decisions = crash_repeatedly(RestartTracker(policy(max_restarts=3, window=10.0)), 4)
    assert [type(d) for d in decisions] == [Restart, Restart, Restart, GiveUp]
    assert decisions[-1] == GiveUp("crash loop: 4 exits within 10s (max_restarts = 3)")


def test_exits_older_than_the_window_do_not_count() -> None:
    tracker = RestartTracker(policy(max_restarts=2, window=10.0))
    for now in (0.0, 1.0):
        tracker.started(now)
        assert isinstance(tracker.exited(now + 0.1, failed=True), Restart)
    tracker.started(10.0)
    assert isinstance(tracker.exited(10.5, failed=True), Restart)  # 0.1 fell out of the window
    assert tracker.exits_in_window == 2
    tracker.started(10.6)
    assert isinstance(tracker.exited(10.7, failed=True), GiveUp)


def test_backoff_resets_after_staying_up_long_enough() -> None:
    tracker = RestartTracker(policy(reset_after=30.0))
    assert crash_repeatedly(tracker, 3)[-1] == Restart(0.4, 3)
    tracker.started(100.0)
    assert tracker.exited(129.0, failed=True) == Restart(0.8, 4)  # up 29s: no reset
    tracker.started(200.0)
    assert tracker.exited(230.0, failed=True) == Restart(0.1, 1)  # up 30s: reset


@pytest.mark.parametrize(
    ("mode", "failed", "expected"),
    [
        ("always", False, Restart(0.1, 1)),
        ("always", True, Restart(0.1, 1)),
        ("on-failure", False, Done()),
        ("on-failure", True, Restart(0.1, 1)),
        ("never", False, Done()),
        ("never", True, GiveUp('it exited and restart mode is "never"')),
    ],
)
def test_modes(mode: str, failed: bool, expected: object) -> None:
    tracker = RestartTracker(policy(mode=mode))
    tracker.started(0.0)
    assert tracker.exited(1.0, failed=failed) == expected


def test_zero_max_restarts_gives_up_at_once() -> None:
    tracker = RestartTracker(policy(max_restarts=0, window=5.0))
    tracker.started(0.0)
    assert tracker.exited(0.5, failed=True) == GiveUp(
        "crash loop: 1 exits within 5s (max_restarts = 0)"
    )


# -- the lifecycle table --------------------------------------------------------------


def test_table_covers_every_state_and_stop_is_always_allowed() -> None:
    assert set(TRANSITIONS) == set(State)
    for state, row in TRANSITIONS.items():
        assert Event.STOP in row, state
        assert all(isinstance(target, State) for target in row.values())


def test_machine_walks_starting_ready_backing_off_failed() -> None:
    machine = ServiceMachine("api", policy(max_restarts=1, window=60.0), now=0.0)
    machine.start(1.0)
    machine.ready(1.5)
    decision = machine.exited(2.0, "ValueError: boom")
    assert decision == Restart(0.1, 1)
    assert state(machine) is State.BACKING_OFF
    assert machine.next_attempt_at == pytest.approx(2.1)
    machine.retry(2.1)
    assert (machine.state, machine.restarts, machine.next_attempt_at) == (State.STARTING, 1, None)
    assert isinstance(machine.exited(2.2, "ValueError: again"), GiveUp)
    assert state(machine) is State.FAILED
    assert machine.last_error == "ValueError: again"
    assert machine.failure_reason == "crash loop: 2 exits within 60s (max_restarts = 1)"
    assert [(t.source, t.target) for t in machine.history] == [
        (State.STOPPED, State.STARTING),
        (State.STARTING, State.READY),
        (State.READY, State.BACKING_OFF),
        (State.BACKING_OFF, State.STARTING),
        (State.STARTING, State.FAILED),
    ]
    machine.start(3.0)  # a manual restart forgets the crash history
    assert (state(machine), reason(machine)) == (State.STARTING, None)
    assert machine.exited(3.1, "again") == Restart(0.1, 1)


def test_clean_exit_keeps_the_last_error_of_an_earlier_crash() -> None:
    machine = ServiceMachine("api", policy(mode="on-failure"))
    machine.start(0.0)
    machine.exited(1.0, "RuntimeError: x")
    machine.retry(2.0)
    assert machine.exited(3.0, None) == Done()
    assert (machine.state, machine.last_error) == (State.STOPPED, "RuntimeError: x")


def test_events_outside_the_table_raise_naming_service_state_and_event() -> None:
    machine = ServiceMachine("api", policy())
    with pytest.raises(InvalidTransition) as info:
        machine.ready(0.0)
    assert str(info.value) == "service 'api': event 'ready' is not allowed in state 'stopped'"
    with pytest.raises(InvalidTransition, match="event 'exit' is not allowed in state 'stopped'"):
        machine.exited(0.0, None)


def test_stop_from_each_state() -> None:
    machine = ServiceMachine("api", policy())
    assert machine.stop(0.0) is False and state(machine) is State.STOPPED
    machine.start(1.0)
    assert machine.stop(2.0) is True and state(machine) is State.STOPPING
    machine.stopped(3.0)
    machine.start(4.0)
    machine.exited(5.0, "boom")
    assert machine.stop(6.0) is False  # backing off: nothing runs
    assert (machine.state, machine.next_attempt_at) == (State.STOPPED, None)
