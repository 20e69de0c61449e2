"""``python -m benches.soak [--quick] [--out DIR] [--fault NAME ...] [--strict]``.

Runs the faults one at a time, each against a fresh fabric under load, and
writes ``soak.json`` and ``soak.md`` into ``--out``. By default each fault
runs in a child process of its own (with its own databases), so one fault's
memory does not show in the next one's RSS, and a fault that kills the
process hosting the workloads is reported as ``host alive: no`` rather than
ending the run; ``--in-process`` runs them all in this process. The exit status is 0
whatever the faults did, unless ``--strict`` is given (then 1 when a fault did
not hold); 2 for a harness failure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from benches.env import machine_info
from benches.soak import (
    backend_kill,
    client_drop,
    crash_loop,
    db_restart,
    huge_result,
    ingress_flood,
    sigterm,
    stalled_reader,
)
from benches.soak.common import FaultContext, Progress
from benches.soak.model import PROFILES, FaultResult, SoakProfile, SoakReport
from benches.soak.report import render_markdown, write_reports
from benches.soak.stack import ROOT, Stack

__all__ = ["FAULTS", "arun", "main", "run"]

FaultRun = Callable[[FaultContext], Awaitable[FaultResult]]

#: exit status of a child process whose harness (not its fabric) failed
CHILD_HARNESS_ERROR = 2

#: every fault, in the order they run (the ones that grow memory last)
FAULTS: dict[str, tuple[str, FaultRun]] = {
    m.NAME: (m.TITLE, m.run)
    for m in (
        client_drop,
        backend_kill,
        db_restart,
        crash_loop,
        ingress_flood,
        sigterm,
        stalled_reader,
        huge_result,
    )
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _machine(servers: dict[str, str]) -> dict[str, str]:
    info = machine_info(servers)
    machine = {
        "cpu": info.cpu_model,
        "cpus": str(info.cpus),
        "memory": f"{info.memory_mb / 1024:.1f} GiB",
        "os": info.os,
        "kernel": info.kernel,
        "python": info.python,
        "host": info.hostname,
    }
    machine.update({f"server {k}": v for k, v in servers.items()})
    return machine


class ChildReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a child process running one fault hands back."""

    result: FaultResult
    servers: dict[str, str]
    notes: list[str]


async def _run_child(
    name: str, profile: str, use_mysql: bool, say: Progress
) -> tuple[FaultResult, dict[str, str], list[str]]:
    title = FAULTS[name][0]
    with tempfile.TemporaryDirectory(prefix="fabric-soak-") as tmp:
        out = Path(tmp) / "child.json"
        argv = [
            "-m",
            "benches.soak",
            "--child",
            name,
            "--profile",
            profile,
            "--child-out",
            str(out),
        ]
        if not use_mysql:
            argv.append("--no-mysql")
        proc = await asyncio.create_subprocess_exec(sys.executable, *argv, cwd=ROOT)
        code = await proc.wait()
        if out.exists():
            child = msgspec.json.decode(out.read_bytes(), type=ChildReport)
            return child.result, child.servers, child.notes
    if code == CHILD_HARNESS_ERROR:
        # The child reported a failure of the suite itself (its traceback is on stderr).
        return (
            FaultResult(
                name=name,
                title=title,
                outcome="error",
                problems=["harness error in the child process (see its traceback)"],
            ),
            {},
            [],
        )
    say(f"  {name}: the process hosting the workloads ended with status {code}")
    died = FaultResult(
        name=name,
        title=title,
        outcome="failed",
        problems=[f"the host died: the process running the fault ended with status {code}"],
        host_alive=False,
    )
    return died, {}, []


async def arun(
    profile: SoakProfile | str = "quick",
    out_dir: Path | str | None = None,
    faults: Sequence[str] | None = None,
    *,
    use_mysql: bool = True,
    isolate: bool = False,
    progress: Progress | None = None,
) -> SoakReport:
    """Run the chosen faults (all when None) and write the reports to ``out_dir``.

    ``isolate`` runs each fault in a child process (``profile`` must then be a
    profile's name).
    """
    chosen = PROFILES[profile] if isinstance(profile, str) else profile
    names = list(faults) if faults else list(FAULTS)
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise ValueError(f"unknown faults {unknown} (have: {', '.join(FAULTS)})")
    say = progress or (lambda _msg: None)
    started, t0 = _now(), time.monotonic()
    if isolate:
        if PROFILES.get(chosen.name) != chosen:
            raise ValueError("isolated runs take a named profile")
        results: list[FaultResult] = []
        servers: dict[str, str] = {}
        notes: list[str] = []
        for name in names:
            say(f"fault {name}: {FAULTS[name][0]}")
            result, child_servers, child_notes = await _run_child(name, chosen.name, use_mysql, say)
            results.append(result)
            servers.update(child_servers)
            notes += [n for n in child_notes if n not in notes]
        return await _finish(started, t0, chosen, servers, results, notes, out_dir)
    stack = Stack(use_mysql=use_mysql)
    results = []
    try:
        await stack.start()
        ctx = FaultContext(stack, chosen, say)
        for name in names:
            title, fault = FAULTS[name]
            say(f"fault {name}: {title}")
            try:
                result = await fault(ctx)
            except Exception as exc:
                say(traceback.format_exc())
                result = FaultResult(
                    name=name,
                    title=title,
                    outcome="error",
                    problems=[f"harness error: {type(exc).__name__}: {exc}"],
                )
            say(f"  {name}: {result.outcome}" + "".join(f"; {p}" for p in result.problems))
            results.append(result)
        servers = stack.servers
    finally:
        notes = list(stack.notes)
        await stack.aclose()
    return await _finish(started, t0, chosen, servers, results, notes, out_dir)


async def _finish(
    started: str,
    t0: float,
    chosen: SoakProfile,
    servers: dict[str, str],
    results: list[FaultResult],
    notes: list[str],
    out_dir: Path | str | None,
) -> SoakReport:
    report = SoakReport(
        started_at=started,
        finished_at=_now(),
        duration_seconds=round(time.monotonic() - t0, 1),
        profile=chosen,
        machine=_machine(servers),
        faults=results,
        notes=notes,
    )
    if out_dir is not None:
        await asyncio.to_thread(write_reports, report, Path(out_dir))
    return report


def run(
    profile: SoakProfile | str = "quick",
    out_dir: Path | str | None = None,
    faults: Sequence[str] | None = None,
    *,
    use_mysql: bool = True,
    isolate: bool = False,
    progress: Progress | None = None,
) -> SoakReport:
    """:func:`arun` on a fresh uvloop loop."""
    import uvloop

    return uvloop.run(
        arun(profile, out_dir, faults, use_mysql=use_mysql, isolate=isolate, progress=progress)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benches.soak",
        description="Run the reliability suite: faults injected into a loaded fabric.",
    )
    parser.add_argument("--quick", action="store_true", help="the short profile (CI)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for soak.json and soak.md (default: soak-results/<UTC time>)",
    )
    parser.add_argument(
        "--fault", action="append", choices=list(FAULTS), help="run only this fault (repeatable)"
    )
    parser.add_argument("--no-mysql", action="store_true", help="load PostgreSQL only")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any fault does not hold")
    parser.add_argument("--in-process", action="store_true", help="run every fault in this process")
    parser.add_argument("--profile", choices=list(PROFILES), help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=list(FAULTS), help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    profile = args.profile or ("quick" if args.quick else "full")

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.child:
        return _child(args.child, profile, args.child_out, not args.no_mysql, say)
    out = args.out or Path("soak-results") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        report = run(
            profile,
            out,
            args.fault,
            use_mysql=not args.no_mysql,
            isolate=not args.in_process,
            progress=say,
        )
    except Exception:
        traceback.print_exc()
        return 2
    print(render_markdown(report))
    print(f"wrote {out}/soak.json and {out}/soak.md", file=sys.stderr)
    if any(f.outcome == "error" for f in report.faults):
        return 2
    if args.strict and any(f.outcome != "held" for f in report.faults):
        return 1
    return 0


def _child(name: str, profile: str, out: Path, use_mysql: bool, say: Progress) -> int:
    """One fault in this process; the result goes to ``out`` as a :class:`ChildReport`."""
    try:
        report = run(
            profile,
            None,
            [name],
            use_mysql=use_mysql,
            progress=lambda m: say(m) if m.startswith("  ") else None,
        )
    except Exception:
        traceback.print_exc()
        return CHILD_HARNESS_ERROR
    servers = {
        k.removeprefix("server "): v for k, v in report.machine.items() if k.startswith("server ")
    }
    child = ChildReport(result=report.faults[0], servers=servers, notes=report.notes)
    out.write_bytes(msgspec.json.encode(child))
    return 0
