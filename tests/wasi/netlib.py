"""Run the ``net`` test guest inside fabric workloads and read what it prints.

A test describes its workloads as manifest dicts (:func:`workload`,
:func:`service`), runs them with :func:`running` and talks to them through
:class:`Running`: ``invoke`` runs the client component once and parses its
``key=value`` facts, ``service_facts`` waits for a service to exit and parses
what it printed, ``wait_fact`` waits for a running service to print a fact
(``listening=PORT``). Guest output reaches the test through the fabric's
``emit`` callback, one ``[workload/guest] line`` at a time (:class:`Lines`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabric.engine import GuestTrap
from fabric.net import PipeEnd, TcpSocket, VirtualNetwork
from fabric.runtime import Runtime
from fabric.workload import ServiceStatus, State, manifest_from_dict
from fabric.workload.runtime import Fabric, WorkloadRuntime
from tests.reference.wasmtime_cli import parse_facts

__all__ = [
    "TIMEOUT",
    "GuestRun",
    "Lines",
    "Running",
    "free_host_port",
    "pipe_ends",
    "running",
    "service",
    "workload",
]

#: Only there to turn a hang into a failure; nothing here is timed.
TIMEOUT = 60.0


def service(
    name: str,
    wasm: Path,
    *args: str,
    ports: Iterable[int] = (),
    restart: str = "never",
) -> dict[str, Any]:
    """A wasm service running the net guest with ``args`` (``restart`` mode, default never)."""
    return {
        "name": name,
        "wasm": str(wasm),
        "args": list(args),
        "ports": list(ports),
        "restart": {"mode": restart, "initial_backoff": "30s", "max_backoff": "30s"},
    }


def workload(
    name: str,
    wasm: Path,
    *,
    services: Iterable[dict[str, Any]] = (),
    egress: Iterable[dict[str, Any]] = (),
    ingress: Iterable[dict[str, Any]] = (),
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A workload with the net guest as component ``client`` and the given services."""
    return {
        "name": name,
        "services": list(services),
        "components": [{"name": "client", "wasm": str(wasm), "timeout": f"{TIMEOUT:g}s"}],
        "egress": list(egress),
        "ingress": list(ingress),
        "names": dict(names or {}),
    }


class Lines:
    """The fabric's ``emit`` callback: every guest output line, kept and waitable."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()

    def of(self, guest: str, start: int = 0) -> list[str]:
        """Lines of ``guest`` (``workload/name``, or ``workload/name#`` for invocations)."""
        prefix = f"[{guest}" if guest.endswith("#") else f"[{guest}] "
        return [
            line.split("] ", 1)[1] if "] " in line else ""
            for line in self.lines[start:]
            if line.startswith(prefix)
        ]

    def facts(self, guest: str) -> dict[str, str]:
        return parse_facts("\n".join(self.of(guest)))

    async def wait_fact(self, guest: str, key: str, timeout: float = TIMEOUT) -> str:
        """Wait until ``guest`` printed ``key=...``; return the value."""
        async with asyncio.timeout(timeout):
            while key not in (facts := self.facts(guest)):
                self._changed.clear()
                await self._changed.wait()
        return facts[key]


@dataclass(frozen=True)
class GuestRun:
    """One invocation of the client component."""

    exit_code: int | None  # None: the guest trapped
    stdout: str
    stderr: str
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def trapped(self) -> bool:
        return self.exit_code is None

    def check(self) -> GuestRun:
        assert self.exit_code == 0, f"guest failed ({self.exit_code}):\n{self.stdout}{self.stderr}"
        return self


class Running:
    """A started fabric and the lines its guests printed."""

    def __init__(self, fabric: Fabric, lines: Lines) -> None:
        self.fabric = fabric
        self.lines = lines

    def workload(self, name: str) -> WorkloadRuntime:
        return self.fabric.workloads[name]

    def network(self, name: str) -> VirtualNetwork:
        return self.fabric.workloads[name].network

    async def invoke(self, wl: str, *args: str, timeout: float = TIMEOUT) -> GuestRun:
        """Run the ``client`` component of ``wl`` once with ``args``.

        A trap (an uncaught Python exception in the guest) is a ``GuestRun``
        with ``exit_code=None`` and the guest's stderr.
        """
        start = len(self.lines.lines)
        try:
            async with asyncio.timeout(timeout):
                result = await self.fabric.workloads[wl].invoke("client", None, list(args))
        except GuestTrap:
            stderr = "\n".join(self.lines.of(f"{wl}/client#", start))
            return GuestRun(None, "", stderr)
        stdout = result["stdout"]
        return GuestRun(result["exit_code"], stdout, result["stderr"], parse_facts(stdout))

    async def wait_service(
        self, wl: str, name: str, timeout: float = TIMEOUT, *states: State
    ) -> ServiceStatus:
        """Wait until service ``name`` stopped or failed (or reached ``states``)."""
        wanted = states or (State.STOPPED, State.FAILED)
        async with asyncio.timeout(timeout):
            return await self.fabric.workloads[wl].supervisor.wait_for(name, *wanted)

    async def service_facts(self, wl: str, name: str, timeout: float = TIMEOUT) -> dict[str, str]:
        """Wait for service ``name`` to exit cleanly; return the facts it printed."""
        status = await self.wait_service(wl, name, timeout)
        assert status.state == State.STOPPED.value and status.last_error is None, (
            f"{wl}/{name}: {status}\n" + "\n".join(self.lines.of(f"{wl}/{name}"))
        )
        return self.lines.facts(f"{wl}/{name}")

    async def wait_fact(self, wl: str, name: str, key: str, timeout: float = TIMEOUT) -> str:
        return await self.lines.wait_fact(f"{wl}/{name}", key, timeout)


@contextlib.asynccontextmanager
async def running(
    runtime: Runtime, *workloads: dict[str, Any], path: str = "<net-guests>"
) -> AsyncIterator[Running]:
    """Start a fabric with ``workloads`` (dicts from :func:`workload`); stop it on exit."""
    manifest = manifest_from_dict({"workloads": list(workloads)}, path=path, base_dir=".")
    lines = Lines()
    fabric = Fabric(manifest, runtime=runtime, emit=lines)
    async with asyncio.timeout(TIMEOUT):
        await fabric.start()
    try:
        yield Running(fabric, lines)
    finally:
        async with asyncio.timeout(TIMEOUT):
            await fabric.stop()


def pipe_ends(network: VirtualNetwork) -> list[PipeEnd]:
    """The pipe ends of every connected TCP socket of ``network``'s guests."""
    return [
        sock.connection
        for guest in network.guests
        for sock in guest.sockets
        if isinstance(sock, TcpSocket) and sock.connection is not None
    ]


def free_host_port() -> int:
    """A real loopback port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def pattern(n: int) -> bytes:
    """The payload of the net guest's ``bulk-send`` mode (the guest's ``pattern``)."""
    block = hashlib.sha256(b"fabric-bulk").digest() * 2048
    return (block * (n // len(block) + 1))[:n]
