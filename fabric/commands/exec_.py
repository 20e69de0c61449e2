"""``fabric exec``: run a ``wasi:cli/run`` component, stream its stdio, exit with its code."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shlex
import sys
from typing import Any

from fabric.engine import ComponentLoadError, DeadlineExceeded, GuestTrap
from fabric.errors import UsageError
from fabric.net import EgressRule, IngressRule, NetworkPolicy, Role, VirtualNetwork
from fabric.wasi import Preopen, WasiConfig, WasiCtx
from fabric.wasi.io import BytesInput, InputStream, ReaderInput
from fabric.workload.threads import in_daemon_thread

from ._common import parse_size, run_async


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "exec",
        help="run a wasi:cli/run component",
        description="Run a WASI 0.2 command component and exit with its exit code.",
    )
    p.add_argument("component", help="path to the component (.wasm)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="set a variable")
    p.add_argument(
        "--dir",
        action="append",
        default=[],
        metavar="HOST::GUEST[:ro]",
        help="preopen a host directory at GUEST (read-only with :ro)",
    )
    p.add_argument(
        "--timeout", type=parse_timeout, default=None, metavar="S", help="deadline in seconds"
    )
    p.add_argument("--max-memory", default=None, metavar="SIZE", help="memory limit, e.g. 256MiB")
    p.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="'SVC.wasm [ARG...]'",
        help="start a long-lived guest in the same workload first, wait until it listens",
    )
    p.add_argument(
        "--publish",
        action="append",
        default=[],
        metavar="HOSTPORT:VPORT",
        help="expose a virtual port on a real host port (ingress)",
    )
    p.add_argument(
        "--egress",
        action="append",
        default=[],
        metavar="DEST:PORT=HOST:PORT",
        help="let guests reach a real address (egress rule)",
    )
    p.add_argument("args", nargs="*", help="arguments for the guest (after --)")
    p.set_defaults(handler=main)


def _missing(path: str) -> bool:
    """True if ``path`` does not exist (the engine then says so in its own words)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # file_problem reports why it cannot be read
    return False


def parse_timeout(text: str) -> float:
    """``--timeout``: a finite number of seconds, above 0 and at most a year."""
    from fabric.workload.checks import MAX_DURATION

    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_DURATION:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds above 0 and at most {int(MAX_DURATION)}, got {text!r}"
        )
    return seconds


def _no_nul(option: str, text: str) -> None:
    if "\0" in text:
        raise UsageError(f"{option} {text!r}: contains a NUL byte")


def parse_env(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {item!r}: expected K=V")
        _no_nul("--env", item)
        env[key] = value
    return env


def parse_args(items: list[str]) -> list[str]:
    for item in items:
        _no_nul("argument", item)
    return items


def parse_memory(text: str) -> int:
    from fabric.workload.checks import MAX_MEMORY
    from fabric.workload.units import format_size

    size = parse_size(text)
    if size > MAX_MEMORY:
        raise UsageError(f"--max-memory {text!r}: expected at most {format_size(MAX_MEMORY)}")
    return size


def parse_service(spec: str) -> tuple[str, list[str]]:
    """``--service 'SVC.wasm ARG...'``: the path and the arguments, split like a shell."""
    _no_nul("--service", spec)
    try:
        words = shlex.split(spec)
    except ValueError as exc:
        raise UsageError(f"--service {spec!r}: {exc}") from None
    if not words:
        raise UsageError(f"--service {spec!r}: expected a component path and its arguments")
    return words[0], words[1:]


def parse_dir(item: str) -> Preopen:
    host, sep, guest = item.partition("::")
    _no_nul("--dir", item)
    if not sep or not host or not guest:
        raise UsageError(f"--dir {item!r}: expected HOST::GUEST or HOST::GUEST:ro")
    readonly = False
    if guest.endswith(":ro"):
        guest, readonly = guest[:-3], True
    elif guest.endswith(":rw"):
        guest = guest[:-3]
    if not os.path.isdir(host):
        raise UsageError(f"--dir {item!r}: {host} is not a directory")
    return Preopen(host=os.path.abspath(host), guest=guest, readonly=readonly)


async def _stdin() -> InputStream:
    if sys.stdin is None or sys.stdin.closed:
        return BytesInput(b"")
    fd = sys.stdin.fileno()
    import stat

    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)):
        # Regular files and devices such as /dev/null cannot be watched by the
        # loop (libuv aborts on them): read them whole.
        return BytesInput(await asyncio.to_thread(_read_all, fd))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(fd), "rb", 0)
    )
    return ReaderInput(reader)


def _read_all(fd: int) -> bytes:
    with open(fd, "rb", closefd=False) as f:
        return f.read()


def _writer(stream: Any) -> Any:
    buf = stream.buffer

    def write(data: bytes) -> None:
        buf.write(data)
        buf.flush()

    return write


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return port


def parse_publish(item: str) -> IngressRule:
    host_port, _, vport = item.partition(":")
    try:
        return IngressRule(port=_port(vport), host_port=_port(host_port))
    except ValueError:
        raise UsageError(f"--publish {item!r}: expected HOSTPORT:VPORT (ports 1-65535)") from None


def parse_egress(item: str) -> EgressRule:
    dest, sep, target = item.partition("=")
    dhost, _, dport = dest.rpartition(":")
    thost, _, tport = target.rpartition(":")
    try:
        if not sep or not dhost or not thost or "\0" in item:
            raise ValueError
        port, target_port = _port(dport), _port(tport)
    except ValueError:
        raise UsageError(
            f"--egress {item!r}: expected DEST:PORT=HOST:PORT (ports 1-65535)"
        ) from None
    from fabric.workload.egress import EgressResolveError, resolve_target

    try:
        target = resolve_target(thost, target_port)  # once, not on every connect
    except EgressResolveError as exc:
        raise UsageError(f"--egress {item!r}: {exc}") from None
    return EgressRule(destination=dhost, port=port, target_host=target, target_port=target_port)


def _serving(net: VirtualNetwork) -> set[tuple[str, int]]:
    """The ports a service can be reached on: TCP listeners and bound UDP ports."""
    stats = net.statistics()
    return {("tcp", p) for p in stats.tcp_listening} | {("udp", p) for p in stats.udp_ports}


async def _start_service(
    rt: Any, net: VirtualNetwork, path: str, svc_args: list[str]
) -> asyncio.Task[int]:
    """Start a service guest (``path`` with ``svc_args``) and wait until it listens.

    Listening is a new TCP listener or a newly bound UDP port on the network.
    """
    name = os.path.basename(path)
    component = await in_daemon_thread(rt.load, path)
    before = _serving(net)
    prefix = f"[{name}] ".encode()

    def emit(stream: Any) -> Any:
        write = _writer(stream)
        return lambda data: write(b"".join(prefix + line for line in data.splitlines(True)))

    ctx = WasiCtx(
        WasiConfig(args=[name, *svc_args]),
        name=name,
        stdout=emit(sys.stdout),
        stderr=emit(sys.stderr),
        sockets=net.attach(name, Role.SERVICE),
    )
    task = asyncio.create_task(rt.run_command(component, ctx))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while _serving(net) <= before:
        if task.done():
            task.result()  # raises the service's error, if any
            raise UsageError(f"--service {path}: exited before it listened")
        if loop.time() > deadline:
            raise UsageError(f"--service {path}: not listening after 30 s")
        await asyncio.sleep(0.01)
    return task


def main(args: argparse.Namespace) -> int:
    guest_args = parse_args(list(args.args))
    if guest_args[:1] == ["--"]:
        guest_args = guest_args[1:]
    from fabric.workload.checks import file_problem

    _no_nul("component", args.component)
    problem = None if _missing(args.component) else file_problem(args.component)
    if problem:
        raise UsageError(problem)
    config = WasiConfig(
        args=[os.path.basename(args.component), *guest_args],
        env=parse_env(args.env),
        preopens=[parse_dir(d) for d in args.dir],
    )
    max_memory = parse_memory(args.max_memory) if args.max_memory else None
    service_specs = [parse_service(spec) for spec in args.service]

    policy = NetworkPolicy(
        egress=tuple(parse_egress(e) for e in args.egress),
        ingress=tuple(parse_publish(p) for p in args.publish),
    )

    async def run() -> int:
        from fabric.engine import EngineConfig
        from fabric.runtime import Runtime

        # one command: a pool of instance slots would only lengthen the start
        rt = Runtime(EngineConfig(pooling=False))
        net = VirtualNetwork("exec", policy)
        services: list[asyncio.Task[int]] = []
        try:
            # compiled off the loop, so Ctrl-C during a cold start acts at once
            component = await in_daemon_thread(rt.load, args.component)
            for path, svc_args in service_specs:
                services.append(await _start_service(rt, net, path, svc_args))
            try:
                await net.start_ingress()
            except OSError as exc:
                published = ", ".join(args.publish)
                raise UsageError(
                    f"--publish {published}: cannot listen: {exc.strerror or exc}"
                ) from None
            name = os.path.basename(args.component)
            ctx = WasiCtx(
                config,
                name=name,
                stdin=await _stdin(),
                stdout=_writer(sys.stdout),
                stderr=_writer(sys.stderr),
                sockets=net.attach(name, Role.COMPONENT),
            )
            return await rt.run_command(component, ctx, timeout=args.timeout, max_memory=max_memory)
        finally:
            for task in services:
                task.cancel()
            await asyncio.gather(*services, return_exceptions=True)
            await net.aclose()
            rt.close()

    try:
        return run_async(run())
    except ComponentLoadError as e:
        raise UsageError(str(e)) from None
    except DeadlineExceeded:
        print(f"fabric exec: guest stopped: deadline of {args.timeout}s exceeded", file=sys.stderr)
        return 124
    except GuestTrap as e:
        print(f"fabric exec: guest trapped: {e}", file=sys.stderr)
        return 134
    except OSError as e:
        raise UsageError(f"{e.strerror or e}: {e.filename or args.component}") from None
