"""``fabric run --workers 1`` against ``--workers 2`` on the loopback: an ingress port.

Scenario ``loopback-workers``: a wasm echo service (the ``net`` guest's
``echo-server`` mode, componentize-py) behind an ingress rule, in a real
``fabric run`` process. One op opens a kernel loopback TCP connection to the
ingress host port, does ``ROUNDS`` one-byte round trips through the fabric's
ingress, virtual network and the guest, and closes it. With ``--workers 2``
every worker listens on the host port with ``SO_REUSEPORT`` and the kernel
spreads the connections over them; the parent takes no part.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from benches.errors import ContenderSkipped
from benches.fabric_net import net_guest
from benches.fabric_workers import cpu_per_op, cpu_seconds, roles, start_fabric, stop_fabric
from benches.registry import Registry

ECHO_PORT = 7
ROUNDS = 4
SCENARIO = "loopback-workers"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class IngressEcho:
    """A ``fabric run --workers N`` process serving the echo guest on an ingress port."""

    group = "fabric"

    def __init__(self, env: Any, workers: int) -> None:
        self.env = env
        self.workers = workers
        self.name = f"fabric-workers-{workers}"
        self.description = (
            f"`fabric run --workers {workers}`: connect to the ingress port, "
            f"{ROUNDS} one-byte round trips with the wasm echo service, close"
        )
        self.directory: Path | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.ops = 0
        self._pids: dict[str, int] = {}
        self._cpu_start: dict[str, float] = {}

    async def setup(self) -> None:
        guest = await net_guest()
        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="fabric-workers-net-"))
        manifest = self.directory / "echo.toml"
        manifest.write_text(
            f"""
[[workloads]]
name = "echo"
[[workloads.services]]
name = "echo"
wasm = {json.dumps(str(guest))}
args = ["echo-server", "{ECHO_PORT}"]
ports = [{ECHO_PORT}]
[[workloads.ingress]]
host_port = {self.port}
port = {ECHO_PORT}
max_connections = 1024
"""
        )
        control = self.directory / "control.sock"
        self.proc, report = await start_fabric(manifest, self.workers, control)
        self._pids = roles(self.proc.pid, report)
        # the echo service is up once a round trip through the port succeeds
        for _ in range(100):
            try:
                await self._exchange()
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise ContenderSkipped("the echo service never answered on the ingress port")
        self._cpu_start = cpu_seconds(self._pids)

    async def _exchange(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            for _ in range(ROUNDS):
                writer.write(b"x")
                if await reader.readexactly(1) != b"x":
                    raise RuntimeError("the echo service sent something else")
        finally:
            writer.close()

    async def op(self) -> None:
        await self._exchange()
        self.ops += 1

    async def teardown(self) -> None:
        if self._pids and self.ops:
            self.description += "; " + cpu_per_op(self._pids, self._cpu_start, self.ops)
        if self.proc is not None:
            await stop_fabric(self.proc)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def register(registry: Registry) -> None:
    registry.add_scenario(
        SCENARIO,
        title=f"Ingress port, {ROUNDS} round trips per connection: fabric run --workers 1 vs 2",
        description=(
            "A wasm echo service (componentize-py) behind an ingress rule in a running "
            "`fabric run`. One op: open a kernel loopback connection to the ingress host "
            f"port, {ROUNDS} one-byte round trips, close. With two workers both listen on "
            "the port (SO_REUSEPORT) and the kernel spreads the connections."
        ),
        baseline="fabric-workers-1",
        levels=(1, 8, 64),
    )
    for workers in (1, 2):
        registry.add_contender(SCENARIO, lambda env, n=workers: IngressEcho(env, n))
