"""SIGTERM the fabric under load: ``fabric run`` on a manifest of the ``soak``
workload in a subprocess, ``sigterm_inflight`` invocations kept in flight
through its control socket, then SIGTERM.

Held when the fabric exits 0 by itself within its grace, every invocation in
flight at the signal finished acknowledged (drained; one the fabric refused
with ``ShuttingDown`` never ran and is not counted as in flight), nothing acknowledged
is lost, and no database session of the pools' logins is left behind
(``leases_leaked`` counts those sessions here). RSS is the subprocess's.
``host alive`` means: exited cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benches.soak.common import FaultContext, check_rows, judge
from benches.soak.load import Load, RssSampler, rss_mb
from benches.soak.model import FaultResult
from benches.soak.stack import COMPONENT, ROOT, SOAK_USER, WORKLOAD, Stack
from fabric.workload import remote_invoke, remote_status

NAME = "sigterm"
TITLE = "SIGTERM to `fabric run` under load"

GRACE_SECONDS = 10.0
START_TIMEOUT = 120.0


def to_toml(data: dict[str, Any]) -> str:
    """A TOML document for a manifest dict (strings, numbers, booleans, arrays, tables)."""

    def key(k: str) -> str:
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"cannot write {type(v).__name__} as TOML")

    return "".join(f"{key(k)} = {value(v)}\n" for k, v in data.items())


async def _server_sessions(stack: Stack) -> int:
    """Database sessions of the pools' logins still open (PostgreSQL and MariaDB)."""
    assert stack.pg is not None
    out = await asyncio.to_thread(
        stack.cluster.run_sql,
        "SELECT count(*) FROM pg_stat_activity WHERE usename = :'user'",
        variables={"user": stack.pg.user},
    )
    sessions = int(out.strip() or 0)
    if stack.mysql is not None:
        conn = await stack.mysql.connect(admin=True)
        try:
            async with conn.cursor() as cur:
                await cur.execute(
                    "SELECT count(*) FROM information_schema.processlist WHERE user = %s",
                    (SOAK_USER,),
                )
                (n,) = await cur.fetchone()
                sessions += int(n)
        finally:
            conn.close()
    return sessions


async def _collect(stream: asyncio.StreamReader, into: bytearray) -> None:
    """Keep the child's output (the last 64 KiB of it)."""
    while chunk := await stream.read(65536):
        into += chunk
        del into[:-65536]


async def _wait_ready(proc: asyncio.subprocess.Process, control: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"fabric run exited with {proc.returncode} before it was ready")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await remote_status(control)
            return
        if time.monotonic() > deadline:
            raise RuntimeError("fabric run did not answer on its control socket in time")
        await asyncio.sleep(0.2)


async def _wait_exit(proc: asyncio.subprocess.Process, seconds: float) -> int | None:
    try:
        async with asyncio.timeout(seconds):
            return await proc.wait()
    except TimeoutError:
        return None


async def run(ctx: FaultContext) -> FaultResult:
    stack, profile = ctx.stack, ctx.profile
    t_start = time.monotonic()
    table = await stack.new_table(NAME)
    with tempfile.TemporaryDirectory(prefix="fabric-soak-") as tmp:
        manifest = Path(tmp) / "soak.toml"
        manifest.write_text(to_toml(stack.manifest(grace=f"{GRACE_SECONDS:g}s")))
        control = str(Path(tmp) / "control.sock")
        argv = [
            "-c",
            "from fabric.cli import main; raise SystemExit(main())",
            "run",
            str(manifest),
            "--control",
            control,
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output = bytearray()
        assert proc.stdout is not None
        collector = asyncio.create_task(_collect(proc.stdout, output))
        try:
            await _wait_ready(proc, control)
            sampler = RssSampler(proc.pid).start()
            rss_before = rss_mb(proc.pid)

            async def invoke(args: list[str]) -> Any:
                return await remote_invoke(control, WORKLOAD, COMPONENT, None, args)

            load = Load(invoke, stack.databases, table, profile.sigterm_inflight)
            load.start()
            await asyncio.sleep(profile.warmup)
            t_signal = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await _wait_exit(proc, GRACE_SECONDS + 30)
            exit_seconds = time.monotonic() - t_signal
            await load.stop()
            rss_peak = max(sampler.stop(), rss_before or 0.0)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await collector
    log_text = output.decode(errors="replace")
    # An invocation sent just before the signal that reached the fabric after it
    # is refused with ShuttingDown: it never ran, so it was not in flight there.
    refused = set(load.refused)
    in_flight = [r for r in load.records if r[0] < t_signal < r[1] and r[:2] not in refused]
    drained = sum(1 for r in in_flight if r[2])
    after_signal = [r for r in load.records if r[0] >= t_signal]
    await asyncio.sleep(1.0)
    sessions = await _server_sessions(stack)
    rows = await check_rows(stack, table, load, {})
    clean = code == 0
    problems = judge(rows, sessions, 0, True, None, expect_recovery=False)
    if sessions:
        problems = [p for p in problems if "leases" not in p]
        problems.append(f"{sessions} database sessions left open after the fabric exited")
    if not clean:
        problems.append(f"fabric run exited with {code!r} ({exit_seconds:.1f} s after SIGTERM)")
    if drained < len(in_flight):
        problems.append(
            f"{len(in_flight) - drained} of {len(in_flight)} invocations in flight at SIGTERM "
            "were not drained"
        )
    if "Traceback" in log_text:
        problems.append("fabric run printed a traceback while stopping")
    return FaultResult(
        name=NAME,
        title=TITLE,
        outcome="failed" if problems else "held",
        problems=problems,
        invocations=load.invocations,
        acknowledged=load.acknowledged_count,
        failed=load.failed,
        first_error=load.first_error,
        rows=rows,
        lost=sum(r.lost for r in rows),
        duplicated=sum(r.duplicated for r in rows),
        leases_leaked=sessions,
        transactions_open=None,
        rss_before_mb=None if rss_before is None else round(rss_before, 1),
        rss_peak_mb=round(rss_peak, 1),
        rss_final_mb=None,
        recovery_seconds=None,
        host_alive=clean,
        duration_seconds=round(time.monotonic() - t_start, 2),
        details={
            "exit_status": code,
            "exit_seconds": round(exit_seconds, 2),
            "in_flight_at_signal": len(in_flight),
            "drained": drained,
            "refused_after_signal": sum(1 for r in after_signal if not r[2]),
        },
    )
