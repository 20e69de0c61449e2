"""The suite's data: run profiles and results (msgspec Structs, written as JSON).

Every result is a frozen Struct, so a ``results.json`` file decodes back into
exactly these types with :func:`benches.report.load_json`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "FULL",
    "PROFILES",
    "QUICK",
    "ContenderResult",
    "ContenderStatus",
    "LatencyStats",
    "LevelResult",
    "MachineInfo",
    "Profile",
    "ScenarioResult",
    "SuiteResult",
]

SCHEMA_VERSION = 1

ContenderStatus = Literal["ok", "skipped", "failed"]


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """How long and how hard to measure.

    For each scenario and each concurrency level, every contender first runs
    ``warmup_seconds`` unrecorded, then ``slices`` recorded slices of
    ``slice_seconds`` each, contenders taking turns slice by slice. A slice
    also ends after its share of ``max_ops`` operations. In-flight operations
    always finish, so a slice lasts at least one operation.
    """

    name: str
    levels: tuple[int, ...]
    slices: int
    slice_seconds: float
    warmup_seconds: float
    max_ops: int
    op_timeout: float = 60.0
    setup_timeout: float = 120.0

    def __post_init__(self) -> None:
        if not self.levels or any(level < 1 for level in self.levels):
            raise ValueError("concurrency levels must be positive integers")
        if self.slices < 1 or self.slice_seconds <= 0 or self.max_ops < 1:
            raise ValueError("slices, slice_seconds and max_ops must be positive")


QUICK = Profile(
    name="quick",
    levels=(1, 8, 64),
    slices=3,
    slice_seconds=0.5,
    warmup_seconds=0.2,
    max_ops=50_000,
    op_timeout=30.0,
)

FULL = Profile(
    name="full",
    levels=(1, 8, 64, 256),
    slices=5,
    slice_seconds=2.0,
    warmup_seconds=1.0,
    max_ops=2_000_000,
    op_timeout=60.0,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (QUICK, FULL)}


class LatencyStats(msgspec.Struct, frozen=True, kw_only=True):
    """Per-operation latency in milliseconds (successful operations only)."""

    samples: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


class LevelResult(msgspec.Struct, frozen=True, kw_only=True):
    """One contender at one concurrency level.

    ``throughput`` is successful operations per second of wall time spent in
    this contender's slices. ``speedup_*`` compare with the scenario's
    baseline at the same level: above 1 means better than the baseline
    (``baseline p50 / p50`` and ``throughput / baseline throughput``).
    """

    concurrency: int
    ops: int = 0
    errors: int = 0
    first_error: str | None = None
    wall_seconds: float = 0.0
    throughput: float = 0.0
    mb_per_s: float | None = None
    cpu_us_per_op: float | None = None
    latency: LatencyStats | None = None
    speedup_p50: float | None = None
    speedup_throughput: float | None = None
    skipped: str | None = None


class ContenderResult(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    group: str
    description: str = ""
    status: ContenderStatus = "ok"
    reason: str | None = None
    levels: list[LevelResult] = msgspec.field(default_factory=list)

    def level(self, concurrency: int) -> LevelResult | None:
        for result in self.levels:
            if result.concurrency == concurrency:
                return result
        return None


class ScenarioResult(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    title: str
    description: str
    baseline: str
    levels: list[int]
    contenders: list[ContenderResult]
    duration_seconds: float

    def contender(self, name: str) -> ContenderResult | None:
        for result in self.contenders:
            if result.name == name:
                return result
        return None


class MachineInfo(msgspec.Struct, frozen=True, kw_only=True):
    hostname: str
    os: str
    kernel: str
    cpu_model: str
    cpus: int
    memory_mb: int
    python: str
    event_loop: str
    packages: dict[str, str]
    servers: dict[str, str]


class SuiteResult(msgspec.Struct, frozen=True, kw_only=True):
    schema_version: int = SCHEMA_VERSION
    started_at: str
    finished_at: str
    duration_seconds: float
    profile: Profile
    machine: MachineInfo
    scenarios: list[ScenarioResult]
    notes: list[str] = msgspec.field(default_factory=list)

    def scenario(self, name: str) -> ScenarioResult | None:
        for result in self.scenarios:
            if result.name == name:
                return result
        return None
