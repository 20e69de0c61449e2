"""Side-by-side benchmarks of fabric and the alternatives.

Run ``python -m benches --quick`` (about a minute) or ``python -m benches``
(the full profile); see ``docs/benchmarks.md``. From code::

    from benches import run_suite
    result = run_suite("quick", "bench-results/now", ["pg-*"])

Contenders plug in through ``benches.fabric_*`` modules (see
:mod:`benches.registry`).
"""

from benches.cli import arun_suite, run_suite
from benches.env import BenchEnv, MysqlTarget, PgTarget
from benches.errors import BenchError, ContenderSkipped, PgBouncerNotInstalled, UnknownScenario
from benches.harness import Contender
from benches.model import FULL, QUICK, Profile, SuiteResult
from benches.registry import Registry, Scenario, default_registry

__all__ = [
    "FULL",
    "QUICK",
    "BenchEnv",
    "BenchError",
    "Contender",
    "ContenderSkipped",
    "MysqlTarget",
    "PgBouncerNotInstalled",
    "PgTarget",
    "Profile",
    "Registry",
    "Scenario",
    "SuiteResult",
    "UnknownScenario",
    "arun_suite",
    "default_registry",
    "run_suite",
]
