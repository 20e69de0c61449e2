"""The ``pg-select1-workers`` and ``loopback-workers`` scenarios on a tiny profile:
every ``fabric run`` process serves, the database connections stay within
max_size, and each contender says what CPU its processes spent per op."""

from __future__ import annotations

import re
from pathlib import Path

from benches import fabric_workers_net, run_suite
from benches.baselines import POOL_SIZE
from benches.fabric_workers import SCENARIO
from benches.model import Profile

TINY = Profile(
    name="tiny",
    levels=(4,),
    slices=2,
    slice_seconds=0.2,
    warmup_seconds=0.05,
    max_ops=2_000,
    op_timeout=30,
)


def test_workers_scenario_runs_both_contenders(tmp_path: Path) -> None:
    result = run_suite(TINY, tmp_path / "out", [SCENARIO])
    scenario = result.scenario(SCENARIO)
    assert scenario is not None
    assert [c.name for c in scenario.contenders] == [
        "fabric-workers-1",
        "fabric-workers-2",
        "fabric-workers-2-relay",
    ]
    for contender in scenario.contenders:
        assert contender.status == "ok", contender.reason
        (level,) = contender.levels
        assert level.ops > 0 and level.errors == 0, level.first_error
        seen = re.search(r"at most (\d+) database connections seen", contender.description)
        assert seen is not None, contender.description
        assert 1 <= int(seen.group(1)) <= POOL_SIZE
        assert "CPU µs per op: " in contender.description
    handed, relayed = scenario.contenders[1], scenario.contenders[2]
    assert re.search(r"parent \d+, worker 0 \d+, worker 1 \d+", handed.description)
    assert re.search(r"parent \d+, worker 0 \d+, worker 1 \d+", relayed.description)


def test_loopback_workers_scenario_runs_both_contenders(tmp_path: Path) -> None:
    name = fabric_workers_net.SCENARIO
    result = run_suite(TINY, tmp_path / "out", [name])
    scenario = result.scenario(name)
    assert scenario is not None
    assert [c.name for c in scenario.contenders] == ["fabric-workers-1", "fabric-workers-2"]
    for contender in scenario.contenders:
        assert contender.status == "ok", contender.reason
        assert contender.levels, contender
        for level in contender.levels:  # the scenario's own levels
            assert level.ops > 0, level
        assert "CPU µs per op: " in contender.description
