"""``fabric run``, ``fabric validate``, ``fabric status`` and ``fabric invoke``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
from typing import Any

import msgspec

from fabric.errors import UsageError

from ._common import run_async


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the workloads of a manifest in the foreground")
    p.add_argument("manifest")
    p.add_argument("--control", default=None, help="control socket path (default: derived)")
    p.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="worker processes, each running every workload on its own core "
        "('auto': one per CPU; default 1: one process, docs/workers.md)",
    )
    p.add_argument(
        "--max-instances",
        type=_max_instances,
        default=None,
        metavar="N",
        help="component instances alive at once in each process, every workload's "
        "together (overrides the manifest's max_instances; default 2000)",
    )
    # how the parent of `--workers N` starts worker I of N (docs/workers.md)
    p.add_argument("--worker", type=_worker_slot, default=None, help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("validate", help="check a manifest without running it")
    p.add_argument("manifest")
    p.add_argument("--no-files", action="store_true", help="do not check that files exist")
    p.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="check that it can run in N worker processes (fabric run --workers N)",
    )
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("status", help="show the state of a running fabric")
    p.add_argument("manifest", nargs="?", help="the manifest it runs (locates its socket)")
    p.add_argument("--control", default=None, help="control socket path")
    p.add_argument("--json", action="store_true", help="print the raw report as JSON")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("invoke", help="run a component once through a running fabric")
    p.add_argument("workload")
    p.add_argument("component")
    p.add_argument("export", nargs="?", default=None, help="export to call (default: wasi:cli/run)")
    p.add_argument("args", nargs="?", default=None, help="arguments as a JSON array")
    p.add_argument("--manifest", default=None, help="the manifest it runs (locates its socket)")
    p.add_argument("--control", default=None, help="control socket path")
    p.set_defaults(handler=cmd_invoke)


def _load(
    path: str, *, check_files: bool = True, import_native: bool = False, workers: int = 1
) -> Any:
    from fabric.workload import load_manifest, validate

    manifest = load_manifest(path)
    validate(manifest, check_files=check_files, import_native=import_native, workers=workers)
    return manifest


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _count(text: str, limit: int, expected: str) -> int:
    """``text`` as an integer from 1 to ``limit``, else the argparse error."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= limit:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return count


def _max_instances(text: str) -> int:
    from fabric.workload.manifest import MAX_INSTANCES

    return _count(text, MAX_INSTANCES, f"an integer from 1 to {MAX_INSTANCES}")


def _workers(text: str) -> int:
    from fabric.workload.shares import MAX_WORKERS

    if text == "auto":
        return max(1, min(_cpus(), MAX_WORKERS))
    return _count(text, MAX_WORKERS, f"'auto' or a number of workers from 1 to {MAX_WORKERS}")


def _worker_slot(text: str) -> Any:
    from fabric.workload.shares import WorkerSlot

    try:
        return WorkerSlot.parse(text)
    except (ValueError, msgspec.ValidationError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _control_path(manifest: str | None, control: str | None) -> str:
    from fabric.workload import default_control_path

    for option, value in (("--control", control), ("manifest", manifest)):
        if value is not None and "\0" in value:
            raise UsageError(f"{option} {value!r}: contains a NUL byte")
    return control or str(default_control_path(manifest))


def cmd_validate(args: argparse.Namespace) -> int:
    manifest = _load(
        args.manifest, check_files=not args.no_files, import_native=True, workers=args.workers
    )
    services = sum(len(w.services) for w in manifest.workloads)
    components = sum(len(w.components) for w in manifest.workloads)
    print(
        f"{args.manifest}: ok ({len(manifest.workloads)} workloads, "
        f"{services} services, {components} components)"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from fabric.workload.runtime import Fabric, default_emit

    workers = 1 if args.worker is not None else args.workers
    manifest = _load(args.manifest, import_native=True, workers=workers)
    if args.max_instances is not None:
        manifest = msgspec.structs.replace(manifest, max_instances=args.max_instances)
    path = _control_path(args.manifest, args.control)
    names = ", ".join(w.name for w in manifest.workloads)
    app: Any
    label = "fabric"
    if args.worker is not None:  # one worker of `fabric run --workers N`, started by its parent
        slot = args.worker
        # the parent serves the metrics endpoint for every worker
        manifest = msgspec.structs.replace(manifest, metrics=None)
        label = f"fabric[worker {slot.index}]"
        prefix = f"[worker {slot.index}] "
        app = Fabric(
            manifest,
            control_path=path,
            emit=lambda line: default_emit(prefix + line),
            worker=slot,
        )
    elif workers > 1:
        from fabric.workload.shares import WorkerSlot
        from fabric.workload.worker_process import worker_command
        from fabric.workload.workers import WorkerPool

        command = None
        if args.max_instances is not None:
            limit = ["--max-instances", str(args.max_instances)]

            def command(slot: WorkerSlot, sock: str) -> list[str]:
                return [*worker_command(manifest.path, slot, sock), *limit]

        app = WorkerPool(manifest, workers, control_path=path, command=command)
        names = f"{names} in {workers} workers"
    else:
        app = Fabric(manifest, control_path=path, emit=default_emit)

    from fabric.engine import EngineError
    from fabric.workload import WorkloadError

    try:
        return run_async(_foreground(app, path, names, label, parent_watch=args.worker is not None))
    except (WorkloadError, EngineError) as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"cannot start: {e}") from None
    finally:
        if args.worker is not None:
            # the last worker out removes the parent's private socket directory, which a
            # parent that was killed could not (only an empty directory is removed)
            with contextlib.suppress(OSError):
                os.rmdir(os.path.dirname(path))


async def _foreground(app: Any, path: str, names: str, label: str, *, parent_watch: bool) -> int:
    """Run ``app`` (a ``Fabric`` or a ``WorkerPool``) until SIGINT or SIGTERM, then drain it.

    ``parent_watch``: also stop when stdin closes (the parent of a worker is gone)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if parent_watch:
        _watch_parent(loop, stop, app)
    try:
        await app.prepare()  # a control path that cannot be served: nothing starts
    except BaseException:
        await app.stop()
        raise
    metrics = getattr(app, "metrics", None)
    if metrics is not None:
        print(f"{label}: metrics on {metrics.url}/metrics", file=sys.stderr, flush=True)
    print(f"{label}: starting {names}", file=sys.stderr, flush=True)
    # Ctrl-C or SIGTERM during a cold start (compiling can take many seconds) stops at once
    starting = asyncio.create_task(app.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        print(f"{label}: interrupted while starting; stopped", file=sys.stderr, flush=True)
        await app.stop()
        return 130
    stopping.cancel()
    try:
        starting.result()
    except BaseException:
        await app.stop()
        raise
    # the control socket exists (and is served) from here on
    print(f"{label}: running {names}; control socket {path}", file=sys.stderr, flush=True)
    gave_up: asyncio.Event | None = getattr(app, "gave_up", None)  # every worker failed
    waits = {asyncio.create_task(stop.wait())}
    if gave_up is not None:
        waits.add(asyncio.create_task(gave_up.wait()))
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    print(f"{label}: stopping (draining invocations)", file=sys.stderr, flush=True)
    await app.stop()
    return 1 if gave_up is not None and gave_up.is_set() else 0


def _watch_parent(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, app: Any) -> None:
    """Set ``stop`` when stdin (a pipe or socket from the parent) reaches end of file.

    When stdin is the parent's connection channel (``fabric.workload.handoff``),
    the control connections it passes are served by ``app``'s control server."""
    from fabric.workload.handoff import ConnectionReceiver, is_channel

    fd = sys.stdin.fileno()
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return  # not started by a parent (libuv must not watch /dev/null)
    if stat.S_ISSOCK(mode) and is_channel(fd):

        def adopt(sock: Any, data: bytes, done: Any) -> None:
            control = getattr(app, "control", None)
            if control is None:
                sock.close()
                done()
            else:
                control.adopt(sock, data, done)

        ConnectionReceiver(loop, fd, adopt, stop.set)
        return

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            stop.set()

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)


def _remote(coro: Any) -> Any:
    from fabric.workload import ControlError, ControlUnavailable

    try:
        return run_async(coro)
    except ControlUnavailable as e:
        raise UsageError(f"no running fabric answers: {e}") from None
    except ControlError as e:  # RemoteError, ControlAccessError, broken connections
        raise UsageError(str(e)) from None


def cmd_status(args: argparse.Namespace) -> int:
    from fabric.workload import remote_status

    report = _remote(remote_status(_control_path(args.manifest, args.control)))
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(report)).decode())
        return 0
    print_status(report)
    return 0


def print_status(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if report.instance_limit:
        where = f", {len(report.workers)} workers together" if report.workers else ""
        console.print(
            f"instances: {report.instances} of {report.instance_limit} alive (max_instances{where})"
        )
    elif report.instances:
        console.print(f"instances: {report.instances} alive (no bound)")
    if report.workers:
        wt = Table(title=f"{len(report.workers)} workers", title_justify="left")
        for col in (
            "worker",
            "pid",
            "state",
            "restarts",
            "in flight",
            "routed",
            "lost",
            "last exit",
        ):
            wt.add_column(col)
        for w in report.workers:
            wt.add_row(
                str(w.index),
                "" if w.pid is None else str(w.pid),
                w.state,
                str(w.restarts),
                str(w.in_flight),
                str(w.routed),
                str(w.lost),
                (w.last_exit or w.error or "")[:60],
            )
        console.print(wt)
    for wl in report.workloads:
        table = Table(title=f"workload {wl.name}", title_justify="left")
        for col in ("service", "kind", "state", "restarts", "ports", "last error"):
            table.add_column(col)
        for s in wl.services:
            table.add_row(
                s.name,
                s.kind,
                s.state,
                str(s.restarts),
                ",".join(map(str, s.ports)),
                (s.last_error or "")[:60],
            )
        console.print(table)
        if wl.ingress:
            it = Table(title_justify="left")
            for col in ("ingress", "active", "max", "connections", "direct", "refused"):
                it.add_column(col)
            for r in wl.ingress:
                it.add_row(
                    f"{r.host}:{r.host_port} -> :{r.port}",
                    str(r.active),
                    str(r.max_connections),
                    str(r.connections),
                    str(r.direct),
                    f"{r.refused} ({r.over_limit} over limit)",
                )
            console.print(it)
        if wl.components:
            ct = Table(title_justify="left")
            for col in (
                "component",
                "in flight",
                "waiting",
                "invocations",
                "errors",
                "rejected",
                "p50 ms",
                "p99 ms",
            ):
                ct.add_column(col)
            for c in wl.components:
                lat = c.latency
                ct.add_row(
                    c.name,
                    str(c.in_flight),
                    str(c.waiting),
                    str(c.invocations),
                    str(c.errors),
                    str(c.rejected),
                    "" if lat.p50 is None else f"{lat.p50 * 1000:.2f}",
                    "" if lat.p99 is None else f"{lat.p99 * 1000:.2f}",
                )
            console.print(ct)
            pooled = [c for c in wl.components if c.pool is not None]
            if pooled:
                pt = Table(title_justify="left")
                for col in ("reuse", "warm", "busy", "started", "reused", "retired", "why"):
                    pt.add_column(col)
                for c in pooled:
                    p = c.pool
                    assert p is not None
                    pt.add_row(
                        c.name,
                        f"{p.warm}/{p.pool_size}",
                        str(p.busy),
                        str(p.started),
                        str(p.reused),
                        str(p.retired),
                        ", ".join(f"{k} {v}" for k, v in p.reasons.items()),
                    )
                console.print(pt)
        for s in wl.services:
            if s.stats is not None:
                console.print(f"[bold]{s.name} stats[/bold]")
                console.print_json(msgspec.json.encode(s.stats).decode())


_COMMAND_EXPORTS = (None, "run", "wasi:cli/run")  # how a command (wasi:cli/run) is invoked


def _is_command_result(result: Any) -> bool:
    """The result of running a command: ``{"exit_code", "stdout", "stderr"}``."""
    return (
        isinstance(result, dict)
        and set(result) == {"exit_code", "stdout", "stderr"}
        and isinstance(result["exit_code"], int)
        and isinstance(result["stdout"], str)
        and isinstance(result["stderr"], str)
    )


def cmd_invoke(args: argparse.Namespace) -> int:
    from fabric.workload import remote_invoke

    call_args: list[Any] = []
    if args.args is not None:
        try:
            parsed = json.loads(args.args)
        except json.JSONDecodeError as e:
            raise UsageError(f"ARGS must be a JSON array: {e}") from None
        except RecursionError:
            raise UsageError("ARGS must be a JSON array: nested too deeply") from None
        call_args = parsed if isinstance(parsed, list) else [parsed]
    streams = {"stdout": sys.stdout, "stderr": sys.stderr}

    def on_output(name: str, data: bytes) -> None:
        stream = streams.get(name, sys.stderr)
        stream.flush()
        stream.buffer.write(data)
        stream.buffer.flush()

    result = _remote(
        remote_invoke(
            _control_path(args.manifest, args.control),
            args.workload,
            args.component,
            args.export,
            call_args,
            # a command's output is streamed as it is written, not held until it ends
            on_output=on_output if args.export in _COMMAND_EXPORTS else None,
        )
    )
    if args.export in _COMMAND_EXPORTS and _is_command_result(result):
        sys.stdout.write(result["stdout"])
        sys.stderr.write(result["stderr"])
        return int(result["exit_code"])
    print(json.dumps(result))
    return 0
