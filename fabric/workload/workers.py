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
* SIGINT/SIGTERM reach the parent only (the workers run in their own process
  group): it refuses new invocations and sends SIGTERM to every worker, each
  of which drains as a single fabric does. A worker whose parent is gone sees
  its stdin close and stops the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from fabric.wasi.io import OutputStream

from .aggregate import merge_workloads
from .control import (
    ControlServer,
    ErrorReply,
    Invoke,
    InvokeReply,
    Output,
    Response,
    connect,
    remote_status,
    runtime_dir,
)
from .control_access import private_directory
from .errors import ControlError, NoWorkerReady, RemoteError, WorkerLost, WorkloadError
from .lifecycle import ServiceMachine, State
from .manifest import Manifest
from .restart import GiveUp, Restart, RestartPolicy
from .shares import WorkerSlot
from .status import StatusReport, WorkerStatus
from .streaming import OutputFactory

__all__ = ["RESTART_POLICY", "WorkerPool", "WorkerProcess", "describe_exit", "worker_command"]

#: how a dead worker is restarted: 0.5 s doubling to 30 s; more than 5 deaths within
#: a minute mark it failed (the services' crash-loop rule, docs/workers.md)
RESTART_POLICY = RestartPolicy(
    mode="always", initial_backoff=0.5, max_backoff=30.0, max_restarts=5, window=60.0
)
STATUS_TIMEOUT = 5.0  # seconds a worker has to answer the parent's status request
STOP_MARGIN = 10.0  # seconds past the manifest's grace before a draining worker is killed
IDLE_CONNECTIONS = 64  # open connections kept per worker between invocations
_CHUNK = 4096  # most bytes one blocking write to a client's output stream takes

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Response] = msgspec.json.Decoder(Response)


def describe_exit(returncode: int) -> str:
    """``exited with status 3`` or ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def worker_command(manifest: str, slot: WorkerSlot, control: str) -> list[str]:
    """The command line of one worker process."""
    return [
        sys.executable,
        "-m",
        "fabric.cli",
        "run",
        manifest,
        "--control",
        control,
        "--worker",
        str(slot),
    ]


class WorkerExit(Exception):
    """The worker process exited before its control socket answered."""


class WorkerProcess:
    """One worker: its process, its state machine and the parent's connections to it."""

    def __init__(
        self,
        slot: WorkerSlot,
        command: Sequence[str],
        control: Path,
        *,
        policy: RestartPolicy = RESTART_POLICY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slot = slot
        self.command = list(command)
        self.control = control
        self.machine = ServiceMachine(f"worker {slot.index}", policy, now=clock())
        self.proc: asyncio.subprocess.Process | None = None
        self.in_flight = 0
        self.routed = 0
        self.lost = 0
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._exit: asyncio.Future[str] | None = None

    @property
    def index(self) -> int:
        return self.slot.index

    @property
    def pid(self) -> int | None:
        return None if self.proc is None or self.proc.returncode is not None else self.proc.pid

    @property
    def ready(self) -> bool:
        return self.machine.state is State.READY and self.pid is not None

    async def spawn(self) -> None:
        """Start the process; return once its control socket answers.

        Raises ``WorkerExit`` when the process exits first (its own stderr,
        shared with the parent's, says why)."""
        self.proc = proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.PIPE, start_new_session=True
        )
        self._exit = asyncio.get_running_loop().create_future()
        waiter = asyncio.create_task(proc.wait())
        waiter.add_done_callback(self._exited)
        pause = 0.02
        while not waiter.done():
            try:
                async with asyncio.timeout(STATUS_TIMEOUT):
                    await remote_status(self.control)
                return
            except (ControlError, TimeoutError):
                await asyncio.wait({waiter}, timeout=pause)
                pause = min(pause * 2, 0.2)
        raise WorkerExit(describe_exit(waiter.result()))

    def _exited(self, task: asyncio.Task[int]) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()  # the pipe the worker watched for its parent's end
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
        if self._exit is not None and not self._exit.done():
            reason = "gone" if task.cancelled() else describe_exit(task.result())
            self._exit.set_result(reason)

    async def wait_exit(self) -> str:
        """How the current process ended, once it has."""
        assert self._exit is not None
        return await asyncio.shield(self._exit)

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)

    async def stop(self, timeout: float) -> None:
        """SIGTERM (the worker drains), then SIGKILL after ``timeout`` seconds."""
        if self.proc is None or self._exit is None:
            return
        self.signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await self.wait_exit()
        except TimeoutError:
            print(
                f"fabric: worker {self.index} did not stop within {timeout:g}s; killing it",
                file=sys.stderr,
                flush=True,
            )
            self.signal(signal.SIGKILL)
            await self.wait_exit()

    # -- invocations ------------------------------------------------------------------

    async def invoke(self, message: Invoke, output: OutputFactory | None) -> Any:
        """Run ``message`` in this worker; its errors are re-raised as ``RemoteError``."""
        pid = self.pid
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            try:
                reader, writer = await connect(self.control)
            except ControlError as exc:
                raise await self._lost(message, pid, f"cannot be reached ({exc})") from None
        keep = False
        try:
            writer.write(_encoder.encode(message) + b"\n")
            streams: dict[str, OutputStream] = {}
            while True:
                try:
                    line = await reader.readline()
                except (OSError, ValueError):
                    line = b""
                if not line:
                    raise await self._lost(message, pid, None)
                reply = _decoder.decode(line)
                if isinstance(reply, Output):
                    if output is not None:
                        await _relay(streams, output, reply)
                    continue
                keep = True
                if isinstance(reply, InvokeReply):
                    return reply.result
                if isinstance(reply, ErrorReply):
                    raise RemoteError(reply.kind, reply.message)
                raise ControlError(f"worker {self.index} sent an unexpected reply: {reply!r}")
        finally:
            if keep and len(self._idle) < IDLE_CONNECTIONS and self.pid is not None:
                self._idle.append((reader, writer))
            else:
                writer.close()

    async def _lost(self, message: Invoke, pid: int | None, why: str | None) -> WorkerLost:
        """The error for an invocation whose worker went away (waits briefly to say how)."""
        self.lost += 1
        if why is None:
            why = "closed the connection"
            if self._exit is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        why = await self.wait_exit()
        who = f"worker {self.index}" + (f" (pid {pid})" if pid else "")
        return WorkerLost(
            f"{who} {why} while running {message.workload}/{message.component}: "
            "the invocation did not finish (it may have run in part)"
        )

    # -- status -------------------------------------------------------------------------

    async def report(self) -> tuple[StatusReport | None, str | None]:
        if self.pid is None:
            return None, None
        try:
            async with asyncio.timeout(STATUS_TIMEOUT):
                return await remote_status(self.control), None
        except TimeoutError:
            return None, f"no status within {STATUS_TIMEOUT:g}s"
        except ControlError as exc:
            return None, str(exc)

    def status(
        self, report: StatusReport | None, error: str | None, clock: float, wall: float
    ) -> WorkerStatus:
        m = self.machine
        due = m.next_attempt_at
        return WorkerStatus(
            index=self.index,
            pid=self.pid,
            state=m.state.value,
            since=wall - (clock - m.since),
            restarts=m.restarts,
            exits=m.exits,
            last_exit=m.last_error,
            next_attempt_at=None if due is None else wall + (due - clock),
            in_flight=self.in_flight,
            routed=self.routed,
            lost=self.lost,
            report=report,
            error=error,
        )

    def __repr__(self) -> str:
        return (
            f"<WorkerProcess {self.slot} pid={self.pid} state={self.machine.state.value} "
            f"in_flight={self.in_flight} routed={self.routed} lost={self.lost}>"
        )


async def _relay(streams: dict[str, OutputStream], output: OutputFactory, piece: Output) -> None:
    """Write a worker's ``output`` message to the client's stream (with its backpressure)."""
    stream = streams.get(piece.stream)
    if stream is None:
        stream = streams[piece.stream] = output(piece.stream, None)
    data = memoryview(piece.data)
    for start in range(0, len(data), _CHUNK):
        await stream.blocking_write_and_flush(bytes(data[start : start + _CHUNK]))


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
    ) -> None:
        if count < 2:
            raise ValueError("a worker pool needs at least two workers")
        self.manifest = manifest
        self.count = count
        self.control_path = control_path
        self._command = command or (lambda slot, sock: worker_command(manifest.path, slot, sock))
        self._policy = policy
        self._say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.control: ControlServer | None = None
        self.workers: list[WorkerProcess] = []
        self.directory: Path | None = None
        self.started_at = 0.0
        self.draining = False
        self.stopping = False
        #: set when every worker has failed (the parent then stops, exit status 1)
        self.gave_up = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        self._turn = 0

    # -- lifecycle ----------------------------------------------------------------------

    async def prepare(self) -> None:
        """Check the control socket and the ingress host ports before any worker starts."""
        if self.control is None:
            control = ControlServer(self, self.control_path)
            await control.prepare()
            self.control = control
        for wl in self.manifest.workloads:
            for rule in wl.ingress:
                _check_port_free(wl.name, rule.host, rule.host_port)

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
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        timeout = float(self.manifest.grace) + STOP_MARGIN
        await asyncio.gather(*(w.stop(timeout) for w in self.workers))
        now = time.monotonic()
        for w in self.workers:
            if w.machine.stop(now) or w.machine.state is State.STOPPING:
                w.machine.stopped(now)
        if self.control is not None:
            await self.control.close(grace=1.0)
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
        worker.in_flight += 1
        worker.routed += 1
        try:
            return await worker.invoke(message, output)
        finally:
            worker.in_flight -= 1

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
