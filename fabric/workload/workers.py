"""``fabric run --workers N``: the parent of N worker processes.

Each worker is ``fabric run MANIFEST --worker I/N --control SOCKET``, a full
fabric of its own (one uvloop loop, its own virtual networks, every service
of the manifest; ``fabric.workload.shares`` says what a service holds in
total rather than per worker). Their ingress listeners share the manifest's
host ports through ``SO_REUSEPORT``, so the kernel spreads connections over
them; their control sockets live in a private directory only the parent
uses. The parent is the only place that knows there are workers:

* it serves the manifest's control socket (the same ``ControlServer`` and
  access checks as a single fabric) and routes every ``invoke`` to the ready
  worker with the fewest invocations it routed there still running, over
  connections it keeps open to each worker;
* ``status`` asks every worker for its report and answers with the sum
  (``aggregate.merge_workloads``) plus each worker's report and process state;
* a worker that dies is restarted with backoff (a ``ServiceMachine`` per
  worker, the services' state table and crash-loop rule); the invocations it
  was running fail at once with ``WorkerLost`` naming the worker and how it
  died; a worker that keeps dying is marked failed, and when every worker has
  failed the parent stops;
* the metrics endpoint (``[metrics]``, docs/metrics.md) is the parent's: it
  serves the added-up report, refreshed every ``METRICS_REFRESH`` seconds
  (the workers run without one);
* SIGINT/SIGTERM reach the parent only (the workers run in a session of their
  own): it refuses new invocations and sends SIGTERM to every worker, each
  of which drains as a single fabric does. A worker whose parent is gone sees
  its stdin close and stops the same way.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from .aggregate import merge_workloads
from .control import ControlServer, Invoke, runtime_dir
from .control_access import private_directory
from .errors import NoWorkerReady, WorkloadError
from .lifecycle import State
from .manifest import Manifest
from .metrics_server import MetricsServer, serve_metrics
from .restart import GiveUp, Restart, RestartPolicy
from .shares import WorkerSlot
from .status import StatusReport
from .streaming import OutputFactory
from .worker_process import RESTART_POLICY, WorkerExit, WorkerProcess, worker_command

__all__ = ["STOP_MARGIN", "WorkerPool"]

STOP_MARGIN = 10.0  # seconds past the manifest's grace before a draining worker is killed
METRICS_REFRESH = 1.0  # seconds between the status reports the metrics endpoint serves


class WorkerPool:
    """N workers behind one control socket (a ``ControlTarget``)."""

    def __init__(
        self,
        manifest: Manifest,
        count: int,
        *,
        control_path: str,
        command: Callable[[WorkerSlot, str], Sequence[str]] | None = None,
        policy: RestartPolicy = RESTART_POLICY,
        say: Callable[[str], None] | None = None,
        handoff: bool | None = None,
    ) -> None:
        """``handoff``: pass control connections to the workers (``handoff.py``);
        False relays every invocation through the parent. By default True unless
        ``$FABRIC_WORKERS_HANDOFF`` is ``0``."""
        if count < 2:
            raise ValueError("a worker pool needs at least two workers")
        self.manifest = manifest
        self.count = count
        self.control_path = control_path
        self._command = command or (lambda slot, sock: worker_command(manifest.path, slot, sock))
        self._policy = policy
        self._say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.control: ControlServer | None = None
        #: the metrics endpoint and health probes (``[metrics]``), from ``prepare`` on
        self.metrics: MetricsServer | None = None
        self._report = StatusReport(manifest=manifest.path, pid=os.getpid())
        self._refresher: asyncio.Task[None] | None = None
        self.workers: list[WorkerProcess] = []
        self.directory: Path | None = None
        self.started_at = 0.0
        self.draining = False
        self.stopping = False
        #: set when every worker has failed (the parent then stops, exit status 1)
        self.gave_up = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        self._turn = 0
        if handoff is None:
            handoff = os.environ.get("FABRIC_WORKERS_HANDOFF", "1") != "0"
        self.handoff = handoff

    # -- lifecycle ----------------------------------------------------------------------

    async def prepare(self) -> None:
        """Check the control socket and the ingress host ports before any worker starts."""
        if self.control is None:
            control = ControlServer(
                self, self.control_path, handoff=self.hand_off if self.handoff else None
            )
            await control.prepare()
            self.control = control
        for wl in self.manifest.workloads:
            for rule in wl.ingress:
                _check_port_free(wl.name, rule.host, rule.host_port)
        spec = self.manifest.metrics
        if spec is not None and self.metrics is None:
            self.metrics = await serve_metrics(spec, lambda: self._report)

    async def start(self) -> None:
        await self.prepare()
        base = runtime_dir()
        private_directory(base)
        self.directory = Path(tempfile.mkdtemp(prefix="workers-", dir=base))
        for index in range(self.count):
            slot = WorkerSlot(index, self.count)
            sock = self.directory / f"{index}.sock"
            self.workers.append(
                WorkerProcess(slot, self._command(slot, str(sock)), sock, policy=self._policy)
            )
        # the first worker compiles the components into the on-disk cache; the others
        # then load them from it instead of compiling the same code at the same time
        await self._first_start(self.workers[0])
        await asyncio.gather(*(self._first_start(w) for w in self.workers[1:]))
        self.started_at = time.time()
        self._watchers = [
            asyncio.create_task(self._supervise(w), name=f"worker:{w.index}") for w in self.workers
        ]
        assert self.control is not None
        await self.control.start()
        if self.metrics is not None:
            self._report = await self.status()
            self._refresher = asyncio.create_task(self._refresh(), name="workers:metrics")

    async def _refresh(self) -> None:
        """Keep the report the metrics endpoint serves (its collectors read it
        synchronously) at most ``METRICS_REFRESH`` seconds old."""
        while True:
            await asyncio.sleep(METRICS_REFRESH)
            self._report = await self.status()

    async def _first_start(self, worker: WorkerProcess) -> None:
        worker.machine.start(time.monotonic())
        try:
            await worker.spawn()
        except WorkerExit as exc:
            raise WorkloadError(f"worker {worker.index} did not start: it {exc}") from None
        worker.machine.ready(time.monotonic())

    async def _supervise(self, worker: WorkerProcess) -> None:
        """Restart ``worker`` with backoff whenever its process ends, until stopping."""
        while True:
            pid = worker.proc.pid if worker.proc is not None else None
            reason = await worker.wait_exit()
            if self.stopping:
                return
            decision = worker.machine.exited(time.monotonic(), reason)
            who = f"worker {worker.index} (pid {pid})"
            if isinstance(decision, GiveUp):
                self._say(f"fabric: {who} {reason}; not restarted: {decision.reason}")
                if all(w.machine.state is State.FAILED for w in self.workers):
                    self._say("fabric: every worker has failed; stopping")
                    self.gave_up.set()
                return
            if not isinstance(decision, Restart):  # pragma: no cover - mode is "always"
                return
            self._say(f"fabric: {who} {reason}; restarting in {decision.delay:.2f}s")
            await asyncio.sleep(decision.delay)
            if self._stopping():
                return
            worker.machine.retry(time.monotonic())
            try:
                await worker.spawn()
            except WorkerExit:
                continue  # wait_exit() answers at once; the machine decides again
            worker.machine.ready(time.monotonic())
            self._say(f"fabric: worker {worker.index} restarted (pid {worker.pid})")

    def _stopping(self) -> bool:
        return self.stopping

    async def stop(self) -> None:
        """Refuse new invocations, let every worker drain (SIGTERM), then close."""
        self.draining = self.stopping = True
        if self.control is not None:
            self.control.stop_invocations()
        self._report = msgspec.structs.replace(self._report, draining=True)  # /readyz: 503
        tasks = [*self._watchers, *([self._refresher] if self._refresher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        timeout = float(self.manifest.grace) + STOP_MARGIN
        await asyncio.gather(*(w.stop(timeout) for w in self.workers))
        now = time.monotonic()
        for w in self.workers:
            if w.machine.stop(now) or w.machine.state is State.STOPPING:
                w.machine.stopped(now)
        if self.control is not None:
            await self.control.close(grace=1.0)
        if self.metrics is not None:
            await self.metrics.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    # -- ControlTarget ------------------------------------------------------------------

    def pick(self) -> WorkerProcess:
        """The ready worker with the fewest routed invocations running (ties take turns)."""
        n = len(self.workers)
        best: WorkerProcess | None = None
        for k in range(n):
            w = self.workers[(self._turn + k) % n]
            if w.ready and (best is None or w.in_flight < best.in_flight):
                best = w
        if best is None:
            states = ", ".join(f"worker {w.index} {w.machine.state.value}" for w in self.workers)
            raise NoWorkerReady(f"no worker can take the invocation ({states})")
        self._turn = (best.index + 1) % n
        return best

    async def invoke(
        self,
        workload: str,
        component: str,
        export: str | None,
        args: list[Any],
        output: OutputFactory | None = None,
    ) -> Any:
        worker = self.pick()
        message = Invoke(
            workload=workload,
            component=component,
            export=export,
            args=args,
            stream=output is not None,
        )
        worker.relaying += 1
        worker.routed += 1
        try:
            return await worker.invoke(message, output)
        finally:
            worker.relaying -= 1

    def hand_off(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Pass a connection whose first request is an ``invoke`` to the least-loaded
        worker (``handoff.py``); False: relay it here (no worker ready, the request
        too long to pass along, the worker's channel full)."""
        try:
            worker = self.pick()
        except NoWorkerReady:
            return False
        return worker.hand_off(line, reader, writer)

    async def status(self) -> StatusReport:
        answers = await asyncio.gather(*(w.report() for w in self.workers))
        clock, wall = time.monotonic(), time.time()
        workers = tuple(
            w.status(report, error, clock, wall)
            for w, (report, error) in zip(self.workers, answers, strict=True)
        )
        reports = [(w.index, r) for w, (r, _) in zip(self.workers, answers, strict=True) if r]
        return StatusReport(
            manifest=self.manifest.path,
            pid=os.getpid(),
            started_at=self.started_at,
            draining=self.draining,
            workloads=merge_workloads(reports),
            workers=workers,
            instances=sum(r.instances for _, r in reports),
            instance_limit=sum(r.instance_limit for _, r in reports),
        )

    def __repr__(self) -> str:
        ready = sum(w.ready for w in self.workers)
        return f"<WorkerPool workers={self.count} ready={ready} draining={self.draining}>"


def _check_port_free(workload: str, host: str, port: int) -> None:
    """Refuse an ingress host port something already listens on: with ``SO_REUSEPORT``
    the workers would otherwise join another process of this user on it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise WorkloadError(f"workload {workload!r}: ingress host {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise WorkloadError(
                f"workload {workload!r}: ingress host port {host}:{port} is in use "
                f"({exc.strerror or exc})"
            ) from None
