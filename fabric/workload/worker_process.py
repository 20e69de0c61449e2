"""One worker process of ``fabric run --workers N``, as its parent sees it.

``WorkerProcess`` starts ``fabric run MANIFEST --worker I/N --control SOCKET``
(in a session of its own, stdin a pipe whose end tells the worker its parent
is gone), waits until the worker's control socket answers, and keeps the
parent's open connections to that socket for the invocations it relays. A
``ServiceMachine`` holds its state (starting, ready, backing-off, failed,
stopped), restarts and last exit; ``WorkerPool`` (``workers.py``) drives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from fabric.wasi.io import OutputStream

from .control import (
    ErrorReply,
    Invoke,
    InvokeReply,
    Output,
    Response,
    connect,
    remote_status,
)
from .errors import ControlError, RemoteError, WorkerLost
from .handoff import MAX_PREFIX, channel, closed_ids, send_connection
from .lifecycle import ServiceMachine, State
from .restart import RestartPolicy
from .shares import WorkerSlot
from .status import StatusReport, WorkerStatus
from .streaming import OutputFactory

__all__ = [
    "IDLE_CONNECTIONS",
    "RESTART_POLICY",
    "STATUS_TIMEOUT",
    "WorkerExit",
    "WorkerProcess",
    "describe_exit",
    "worker_command",
]

#: how a dead worker is restarted: 0.5 s doubling to 30 s; more than 5 deaths within
#: a minute mark it failed (the services' crash-loop rule, docs/workers.md)
RESTART_POLICY = RestartPolicy(
    mode="always", initial_backoff=0.5, max_backoff=30.0, max_restarts=5, window=60.0
)
STATUS_TIMEOUT = 5.0  # seconds a worker has to answer the parent's status request
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
        self.relaying = 0  # invocations the parent relays to this worker, running
        self.routed = 0
        self.lost = 0
        #: connections passed to this worker and not over yet, by id: the parent's
        #: duplicate of each, to tell its client if the worker dies (handoff.py)
        self.handed: dict[int, socket.socket] = {}
        self._next_id = 0
        self._channel: socket.socket | None = None
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._exit: asyncio.Future[str] | None = None

    @property
    def index(self) -> int:
        return self.slot.index

    @property
    def pid(self) -> int | None:
        return None if self.proc is None or self.proc.returncode is not None else self.proc.pid

    @property
    def in_flight(self) -> int:
        """Invocations relayed to it and connections passed to it, not over yet."""
        return self.relaying + len(self.handed)

    @property
    def ready(self) -> bool:
        return self.machine.state is State.READY and self.pid is not None

    async def spawn(self) -> None:
        """Start the process; return once its control socket answers.

        Raises ``WorkerExit`` when the process exits first (its own stderr,
        shared with the parent's, says why)."""
        parent_end, child_end = channel()
        try:
            self.proc = proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=child_end.fileno(), start_new_session=True
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        loop = asyncio.get_running_loop()
        self._channel = parent_end
        loop.add_reader(parent_end.fileno(), self._reported)
        self._exit = loop.create_future()
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
        reason = "gone" if task.cancelled() else describe_exit(task.result())
        self._close_channel()  # the worker watched it for its parent's end
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
        if self.handed:
            pid = self.proc.pid if self.proc is not None else None
            self._fail_handed(pid, reason)
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(reason)

    def _close_channel(self) -> None:
        chan, self._channel = self._channel, None
        if chan is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(chan.fileno())
            chan.close()

    def _reported(self) -> None:
        """The worker says connections it was passed are over: drop our duplicates."""
        if self._channel is None:
            return
        ids = closed_ids(self._channel)
        if ids is None:  # end of file: the worker is exiting; _exited follows
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._channel.fileno())
            return
        for conn_id in ids:
            keep = self.handed.pop(conn_id, None)
            if keep is not None:
                keep.close()

    def _fail_handed(self, pid: int | None, reason: str) -> None:
        """Tell the clients of the connections the dead worker held that it is gone."""
        who = f"worker {self.index}" + (f" (pid {pid})" if pid else "")
        reply = ErrorReply(
            "WorkerLost",
            f"{who} {reason} while serving this connection: an invocation in flight "
            "on it did not finish (it may have run in part)",
        )
        line = _encoder.encode(reply) + b"\n"
        for keep in self.handed.values():
            try:
                keep.send(line, socket.MSG_DONTWAIT)
                self.lost += 1
            except OSError:
                pass  # the worker had shut it down already (its report was still on the way)
            with contextlib.suppress(OSError):
                keep.shutdown(socket.SHUT_RDWR)
            keep.close()
        self.handed.clear()

    def hand_off(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Pass a control connection whose first request is ``line`` to this worker;
        False when it cannot take it (the caller then relays the request)."""
        chan = self._channel
        if chan is None or self.pid is None:
            return False
        buffered: Any = getattr(reader, "_buffer", b"")  # read past the first line
        data = line + bytes(buffered)
        sock = writer.get_extra_info("socket")
        if len(data) > MAX_PREFIX or sock is None or reader.at_eof():
            return False
        transport: Any = writer.transport  # a socket transport: it can pause reading
        transport.pause_reading()
        keep = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(sock.fileno()))
        conn_id = self._next_id
        try:
            send_connection(chan, conn_id, keep.fileno(), data)
        except OSError:
            keep.close()
            transport.resume_reading()
            return False
        self._next_id += 1
        self.handed[conn_id] = keep
        self.routed += 1
        return True

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
