"""``python -m benches``: run the suite, print the markdown table, write the files.

:func:`run_suite` (sync, runs its own uvloop loop) and :func:`arun_suite`
(inside a running loop) are what ``fabric bench`` calls.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from benches.env import BenchEnv, machine_info
from benches.errors import BenchError
from benches.harness import measure
from benches.model import PROFILES, Profile, ScenarioResult, SuiteResult
from benches.registry import Registry, default_registry
from benches.report import render_markdown, write_reports

__all__ = ["arun_suite", "main", "resolve_profile", "run_suite"]

Progress = Callable[[str], None]


def resolve_profile(profile: Profile | str, levels: Sequence[int] | None = None) -> Profile:
    """A :class:`Profile` from a name (``quick``/``full``), optionally with other levels."""
    if isinstance(profile, str):
        try:
            profile = PROFILES[profile]
        except KeyError:
            raise BenchError(f"unknown profile {profile!r} (have: {', '.join(PROFILES)})") from None
    if levels:
        profile = msgspec.structs.replace(profile, levels=tuple(levels))
    return profile


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_out_dir() -> Path:
    return Path("bench-results") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


async def arun_suite(
    profile: Profile | str = "quick",
    out_dir: Path | str | None = None,
    scenarios: Sequence[str] | None = None,
    *,
    baselines: Mapping[str, str] | None = None,
    registry: Registry | None = None,
    progress: Progress | None = None,
    env: BenchEnv | None = None,
) -> SuiteResult:
    """Run the selected scenarios (all when ``None``) and write the reports to ``out_dir``.

    ``baselines`` maps scenario name to the contender to compare against
    (default: the scenario's own). ``out_dir=None`` writes nothing.
    """
    chosen_profile = resolve_profile(profile)
    registry = registry or default_registry()
    selected = registry.select(scenarios)
    say = progress or (lambda _msg: None)
    started, t0 = _now(), time.perf_counter()
    results: list[ScenarioResult] = []
    notes: list[str] = list(registry.plugin_errors)
    own_env = env is None
    bench_env = env or BenchEnv()
    try:
        for scenario in selected:
            say(f"scenario {scenario.name}: {scenario.title}")
            s0 = time.perf_counter()
            contenders = [factory(bench_env) for factory in scenario.factories]
            levels = scenario.levels_for(chosen_profile)
            baseline = (baselines or {}).get(scenario.name, scenario.baseline)
            measured = await measure(
                contenders,
                levels,
                chosen_profile,
                baseline=baseline,
                progress=say,
                label=f"  {scenario.name} ",
            )
            if not any(c.name == baseline for c in measured):
                notes.append(f"{scenario.name}: baseline {baseline!r} is not a contender")
            results.append(
                ScenarioResult(
                    name=scenario.name,
                    title=scenario.title,
                    description=scenario.description,
                    baseline=baseline,
                    levels=levels,
                    contenders=measured,
                    duration_seconds=time.perf_counter() - s0,
                )
            )
    finally:
        servers = dict(bench_env.servers)
        if own_env:
            await bench_env.aclose()
    result = SuiteResult(
        started_at=started,
        finished_at=_now(),
        duration_seconds=time.perf_counter() - t0,
        profile=chosen_profile,
        machine=machine_info(servers),
        scenarios=results,
        notes=notes,
    )
    if out_dir is not None:
        await asyncio.to_thread(write_reports, result, Path(out_dir))
    return result


def run_suite(
    profile: Profile | str = "quick",
    out_dir: Path | str | None = None,
    scenarios: Sequence[str] | None = None,
    *,
    baselines: Mapping[str, str] | None = None,
    registry: Registry | None = None,
    progress: Progress | None = None,
) -> SuiteResult:
    """Run the suite on a fresh uvloop event loop (see :func:`arun_suite`)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(
            arun_suite(
                profile,
                out_dir,
                scenarios,
                baselines=baselines,
                registry=registry,
                progress=progress,
            )
        )


def _parse_levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e.g. 1,8,64, got {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("levels must be positive integers")
    return levels


def _parse_baseline(text: str) -> tuple[str, str]:
    scenario, sep, contender = text.partition("=")
    if not sep or not scenario or not contender:
        raise argparse.ArgumentTypeError(f"expected SCENARIO=CONTENDER, got {text!r}")
    return scenario, contender


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benches",
        description="Side-by-side benchmarks: JSON, markdown and PNG written to --out.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short profile (about a minute in all)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default bench-results/<UTC>)"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="scenario name or shell pattern; repeat for several (default: all)",
    )
    parser.add_argument(
        "--levels", type=_parse_levels, help="concurrency levels, e.g. 1,8,64 (overrides profile)"
    )
    parser.add_argument(
        "--baseline",
        action="append",
        type=_parse_baseline,
        default=[],
        metavar="SCENARIO=CONTENDER",
        help="compare a scenario against another contender",
    )
    parser.add_argument(
        "--no-plugins",
        action="store_true",
        help="baselines only: do not load the benches.fabric_* contenders",
    )
    parser.add_argument("--list", action="store_true", help="list scenarios and contenders")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _list(registry: Registry) -> str:
    lines: list[str] = []
    env = BenchEnv()
    for scenario in registry.scenarios:
        lines.append(f"{scenario.name}: {scenario.title} (baseline {scenario.baseline})")
        for factory in scenario.factories:
            contender = factory(env)
            lines.append(f"    {contender.name} [{contender.group}]")
    lines.extend(f"note: {error}" for error in registry.plugin_errors)
    return "\n".join(lines)


GUEST_SOURCES = Path(__file__).resolve().parent.parent / "tests" / "guests"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not GUEST_SOURCES.is_dir():
        # The benchmarks build the repository's test guests (net, cli, WAT).
        print(
            f"fabric bench: runs from a source checkout (no guest sources at {GUEST_SOURCES}); "
            "clone the repository and use ./dev bench",
            file=sys.stderr,
        )
        return 2
    registry = default_registry(plugins=not args.no_plugins)
    if args.list:
        print(_list(registry))
        return 0
    profile = resolve_profile("quick" if args.quick else "full", args.levels)
    out_dir: Path = args.out or default_out_dir()

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        result = run_suite(
            profile,
            out_dir,
            args.scenario,
            baselines=dict(args.baseline),
            registry=registry,
            progress=None if args.quiet else progress,
        )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render_markdown(result))
    print(f"results written to {out_dir}/: results.json, results.md, results.png")
    return 0
