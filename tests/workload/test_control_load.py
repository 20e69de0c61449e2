"""The control endpoint under many clients, and streamed invocation output."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from fabric.runtime import Runtime
from fabric.workload import (
    Admission,
    ControlError,
    ControlServer,
    RemoteError,
    loads_manifest,
    remote_invoke,
)
from fabric.workload.runtime import Fabric
from fabric.workload.status import StatusReport


class Busy:
    """One component behind real admission (4 running, 8 waiting) that yields a while."""

    def __init__(self) -> None:
        self.admission = Admission("busy", 4, 8)

    def status(self) -> StatusReport:
        return StatusReport(manifest="inline", pid=os.getpid(), workloads=())

    async def invoke(
        self,
        workload: str,
        component: str,
        export: str | None,
        args: list[Any],
        output: Any = None,
    ) -> Any:
        async with self.admission.slot():
            for _ in range(20):
                await asyncio.sleep(0)
            return args[0]


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fcl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_400_concurrent_clients_are_each_served_or_refused(socket_dir: Path) -> None:
    server = ControlServer(Busy(), socket_dir / "c.sock")
    await server.start()
    outcomes: collections.Counter[str] = collections.Counter()
    results: list[int] = []

    async def client(i: int) -> None:
        try:
            results.append(await remote_invoke(server.path, "w", "busy", "run", [i]))
            outcomes["served"] += 1
        except RemoteError as exc:
            outcomes[f"refused: {exc.kind}"] += 1
        except Exception as exc:
            outcomes[f"{type(exc).__name__}: {exc}"] += 1

    try:
        async with asyncio.timeout(120):
            await asyncio.gather(*(client(i) for i in range(400)))
    finally:
        await server.close()
    assert sum(outcomes.values()) == 400
    assert set(outcomes) <= {"served", "refused: Overloaded"}, outcomes
    assert outcomes["served"] == len(set(results))  # each served client got its own answer
    assert server.requests == 400


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_client_refused_by_a_full_server_gets_a_clear_error(socket_dir: Path, loop: str) -> None:
    """A socket whose backlog stays full: a ControlError naming it, not a raw OSError."""
    import socket

    from fabric.workload import control

    path = socket_dir / "full.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(0)  # never accepts
    waiting = []
    try:
        for _ in range(4):  # fill the backlog
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            try:
                s.connect(str(path))
            except BlockingIOError:
                s.close()
                break
            waiting.append(s)

        async def attempt() -> None:
            control.CONNECT_PATIENCE = 0.2
            try:
                await remote_invoke(path, "w", "c")
            finally:
                control.CONNECT_PATIENCE = 10.0

        factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
        with pytest.raises(ControlError) as info, asyncio.Runner(loop_factory=factory) as runner:
            runner.run(attempt())
        assert str(info.value) == (
            f"the fabric at {path} is not accepting connections (its backlog stayed full for 0.2s)"
        )
    finally:
        for s in waiting:
            s.close()
        listener.close()


@pytest.fixture
async def command_fabric(
    runtime: Runtime, cli_guest: Path, socket_dir: Path, tmp_path: Path
) -> Any:
    text = f"""
[[workloads]]
name = "tools"
[[workloads.components]]
name = "cli"
wasm = "{cli_guest}"
timeout = "3s"
"""
    manifest = loads_manifest(text, path=str(tmp_path / "m.toml"), base_dir=str(tmp_path))
    fabric = Fabric(
        manifest, runtime=runtime, control_path=str(socket_dir / "c.sock"), emit=lambda _: None
    )
    await fabric.start()
    yield fabric
    await fabric.stop()


async def test_invoke_streams_output_while_the_guest_runs(command_fabric: Fabric) -> None:
    assert command_fabric.control is not None
    path = command_fabric.control.path
    seen: list[tuple[str, bytes, int]] = []

    def on_output(stream: str, data: bytes) -> None:
        in_flight = command_fabric.status().workloads[0].components[0].in_flight
        seen.append((stream, data, in_flight))

    async with asyncio.timeout(60):
        # "loop" prints one line, then spins until its 3 s deadline stops it
        with pytest.raises(RemoteError) as info:
            await remote_invoke(path, "tools", "cli", None, ["loop"], on_output=on_output)
    assert info.value.kind == "DeadlineExceeded"
    # the line reached the client while the guest was still running
    assert seen == [("stdout", b"looping=1\n", 1)]


async def test_streamed_output_arrives_whole(command_fabric: Fabric) -> None:
    assert command_fabric.control is not None
    chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
    size = 3_000_000

    async with asyncio.timeout(60):
        result = await remote_invoke(
            command_fabric.control.path, "tools", "cli", None, ["streams", str(size)],
            on_output=lambda stream, data: chunks[stream].append(data),
        )  # fmt: skip
    assert result == {"exit_code": 0, "stdout": "", "stderr": ""}
    stdout = b"".join(chunks["stdout"])
    assert b"".join(chunks["stderr"]) == b"stderr=hello from stderr\n"
    payload = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    assert f"big_sha256={hashlib.sha256(payload).hexdigest()}".encode() in stdout
    assert payload + b"\n" in stdout
    assert len(chunks["stdout"]) > 1  # sent in pieces, not as one reply


async def test_without_streaming_output_is_in_the_result(command_fabric: Fabric) -> None:
    assert command_fabric.control is not None
    async with asyncio.timeout(60):
        result = await remote_invoke(command_fabric.control.path, "tools", "cli", None, ["args"])
    assert result["exit_code"] == 0
    assert "argc=0" in result["stdout"]


async def test_nul_in_command_arguments_is_refused(command_fabric: Fabric) -> None:
    assert command_fabric.control is not None
    async with asyncio.timeout(60):
        with pytest.raises(RemoteError) as info:
            await remote_invoke(command_fabric.control.path, "tools", "cli", None, ["a\x00b"])
    assert (info.value.kind, info.value.message) == (
        "WorkloadError", "cli: an argument contains a NUL byte",
    )  # fmt: skip
