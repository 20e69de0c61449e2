"""``fabric run --workers 1`` against ``--workers 2``: pooled ``SELECT 1`` invocations.

Scenario ``pg-select1-workers``: one op is one ``fabric invoke`` of the
hand-written WAT component (the CPU-bound path: fabric's own per-invocation
cost dominates) borrowing a pooled PostgreSQL connection from the dbpool
service, sent over the control socket of a real ``fabric run`` process (one
open control connection per concurrent client, as a busy caller would keep).
The contenders differ only in ``--workers``: with 2 the parent hands each
control connection to the least-loaded worker on its first invoke (and
``fabric-workers-2-relay``, ``FABRIC_WORKERS_HANDOFF=0``, relays every
invocation through the parent, the design before). Each description ends
with the CPU time each process of the contender spent per invocation
(``/proc/PID/stat``, from setup to teardown). Both use the same dbpool ``max_size``
(the total across workers); a watcher counts the cluster's connections with
the contender's ``application_name`` all along and the highest count is in
the contender's description.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from benches.baselines import POOL_SIZE
from benches.errors import ContenderSkipped
from benches.registry import Registry
from fabric.build import build_wat_guest
from fabric.workload import remote_status
from fabric.workload.control import ErrorReply, Invoke, InvokeReply, Response, connect
from fabric.workload.errors import ControlError

ROOT = Path(__file__).resolve().parent.parent
WAT_SELECT1 = ROOT / "tests" / "guests" / "wat" / "dbpool_select1.wat"
DBPOOL_PORT = 7000
SCENARIO = "pg-select1-workers"

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Response] = msgspec.json.Decoder(Response)


class ControlClients:
    """Connections to one `fabric run` control socket, kept open between ops
    (one per op in flight), each sending a prepared ``Invoke`` line."""

    def __init__(self, line: bytes) -> None:
        self.line = line
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._open: list[asyncio.StreamWriter] = []

    @classmethod
    def for_invoke(cls, workload: str, component: str, args: list[str]) -> ControlClients:
        line = _encoder.encode(Invoke(workload=workload, component=component, args=args))
        return cls(line + b"\n")

    async def invoke(self, control: Path) -> InvokeReply:
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await connect(control)
            self._open.append(writer)
        writer.write(self.line)
        reply = _decoder.decode(await reader.readline())
        if isinstance(reply, ErrorReply):
            raise RuntimeError(f"{reply.kind}: {reply.message}")
        if not isinstance(reply, InvokeReply):
            raise RuntimeError(f"unexpected reply: {reply!r}")
        self._idle.append((reader, writer))
        return reply

    def close(self) -> None:
        for writer in self._open:
            writer.close()
        self._open.clear()
        self._idle.clear()


def _manifest(target: Any, wat: Path, app: str) -> str:
    def q(value: object) -> str:
        return json.dumps(str(value))  # a TOML basic string

    return f"""
[[workloads]]
name = "bench"
[[workloads.services]]
name = "dbpool"
native = "services.dbpool.service:DbPoolService"
ports = [{DBPOOL_PORT}]
[workloads.services.config]
port = {DBPOOL_PORT}
[workloads.services.config.databases.pg]
kind = "postgres"
host = {q(target.host)}
port = {target.port}
user = {q(target.user)}
password = {q(target.password)}
database = {q(target.database)}
min_size = 4
max_size = {POOL_SIZE}
acquire_timeout = 30.0
application_name = {q(app)}
[[workloads.components]]
name = "wat"
wasm = {q(wat)}
concurrency = 256
queue = 4096
"""


class FabricWorkers:
    """A ``fabric run --workers N`` process, invoked through its control socket."""

    group = "fabric"

    def __init__(self, env: Any, workers: int, *, relay: bool = False) -> None:
        self.env = env
        self.workers = workers
        self.relay = relay
        suffix = "-relay" if relay else ""
        self.name = f"fabric-workers-{workers}{suffix}"
        self.app = f"fabric-bench-workers-{workers}{suffix}-{os.getpid()}"
        self.base = f"`fabric run --workers {workers}`, WAT component, dbpool max_size {POOL_SIZE}"
        if relay:
            self.base += " (FABRIC_WORKERS_HANDOFF=0: the parent relays every invocation)"
        self.description = self.base
        self.directory: Path | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.control: Path | None = None
        self.clients = ControlClients.for_invoke("bench", "wat", [str(DBPOOL_PORT), "pg"])
        self._watcher: asyncio.Task[None] | None = None
        self.max_connections = 0
        self.ops = 0
        self._cpu_start: dict[str, float] = {}
        self._pids: dict[str, int] = {}

    async def setup(self) -> None:
        target = await self.env.postgres()
        if not WAT_SELECT1.exists():
            raise ContenderSkipped(f"{WAT_SELECT1} is missing")
        wat = await asyncio.to_thread(build_wat_guest, WAT_SELECT1)
        self.directory = Path(tempfile.mkdtemp(prefix="fabric-workers-bench-"))
        manifest = self.directory / "bench.toml"
        manifest.write_text(_manifest(target, wat, self.app))
        manifest.chmod(0o600)  # it holds the bench role's password
        self.control = self.directory / "control.sock"
        self.proc, report = await start_fabric(manifest, self.workers, self.control, self.relay)
        self._pids = roles(self.proc.pid, report)
        self._cpu_start = cpu_seconds(self._pids)
        watcher_conn = await asyncpg.connect(
            host=target.host,
            port=target.port,
            user=target.user,
            password=target.password,
            database=target.database,
        )
        self._watcher = asyncio.create_task(self._watch(watcher_conn))

    async def _watch(self, conn: asyncpg.Connection) -> None:
        try:
            while True:
                count = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", self.app
                )
                self.max_connections = max(self.max_connections, int(count))
                self.description = (
                    f"{self.base}; at most {self.max_connections} database connections seen"
                )
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    async def op(self) -> None:
        assert self.control is not None
        reply = await self.clients.invoke(self.control)
        if reply.result.get("exit_code") != 0:
            raise RuntimeError(f"invocation failed: {reply!r}")
        self.ops += 1

    async def teardown(self) -> None:
        if self._pids and self.ops:
            self.description += "; " + cpu_per_op(self._pids, self._cpu_start, self.ops)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
        self.clients.close()
        if self.proc is not None:
            await stop_fabric(self.proc)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


async def start_fabric(
    manifest: Path, workers: int, control: Path, relay: bool = False
) -> tuple[asyncio.subprocess.Process, Any]:
    """``fabric run MANIFEST --workers N`` (its output in ``fabric.log`` beside the
    manifest), once its control socket answers; the process and its status report.
    ``relay``: ``FABRIC_WORKERS_HANDOFF=0`` (the parent relays every invocation)."""
    command = [sys.executable, "-m", "fabric.cli", "run", str(manifest)]
    command += ["--workers", str(workers), "--control", str(control)]
    logfile = manifest.parent / "fabric.log"
    with logfile.open("w") as log:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=dict(os.environ, FABRIC_WORKERS_HANDOFF="0" if relay else "1"),
        )
    deadline = time.monotonic() + 180
    while True:
        try:
            return proc, await remote_status(control)
        except ControlError:
            if proc.returncode is not None or time.monotonic() > deadline:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                text = logfile.read_text()[-600:]
                raise RuntimeError(f"fabric run --workers did not start: {text}") from None
            await asyncio.sleep(0.1)


async def stop_fabric(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (drain), SIGKILL after a minute."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(60):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


def cpu_per_op(pids: dict[str, int], start: dict[str, float], ops: int) -> str:
    """``CPU µs per op: parent 12, worker 0 480, ...`` since ``start``."""
    spent = cpu_seconds(pids)
    shares = ", ".join(
        f"{role} {(spent[role] - start.get(role, spent[role])) / ops * 1e6:.0f}" for role in spent
    )
    return f"CPU µs per op: {shares}"


def roles(pid: int, report: Any) -> dict[str, int]:
    """The processes of a running fabric by role: ``parent`` and ``worker I`` with
    ``--workers N``, ``worker 0`` for the single process."""
    if not report.workers:
        return {"worker 0": pid}
    roles = {"parent": pid}
    for w in report.workers:
        if w.pid is not None:
            roles[f"worker {w.index}"] = w.pid
    return roles


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each process has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    spent: dict[str, float] = {}
    for role, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        spent[role] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return spent


def register(registry: Registry) -> None:
    registry.add_scenario(
        SCENARIO,
        title="PostgreSQL: SELECT 1 per invocation, fabric run --workers 1 vs 2",
        description=(
            "One `fabric invoke` of the WAT dbpool component (SELECT 1 through a pooled "
            "connection) over the control socket of a running `fabric run`, with one worker "
            "process and with two (the parent hands each client connection to the "
            "least-loaded worker on its first invoke; `-relay`: FABRIC_WORKERS_HANDOFF=0, "
            "the parent relays every invocation). The pool's max_size is the total across "
            "workers; each description gives the most database connections the contender "
            "was seen holding and the CPU each of its processes spent per invocation."
        ),
        baseline="fabric-workers-1",
    )
    for workers in (1, 2):
        registry.add_contender(SCENARIO, lambda env, n=workers: FabricWorkers(env, n))
    registry.add_contender(SCENARIO, lambda env: FabricWorkers(env, 2, relay=True))
