"""The ``pg-select1-workers`` scenario on a tiny profile: both ``fabric run``
processes serve invocations and the database connections stay within max_size."""

from __future__ import annotations

import re
from pathlib import Path

from benches import run_suite
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
    assert [c.name for c in scenario.contenders] == ["fabric-workers-1", "fabric-workers-2"]
    for contender in scenario.contenders:
        assert contender.status == "ok", contender.reason
        (level,) = contender.levels
        assert level.ops > 0 and level.errors == 0, level.first_error
        seen = re.search(r"at most (\d+) database connections seen", contender.description)
        assert seen is not None, contender.description
        assert 1 <= int(seen.group(1)) <= POOL_SIZE
