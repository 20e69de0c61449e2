"""fabric contenders for the loopback scenarios: the virtual network.

* ``virtual-native``: the same echo exchange as the kernel-loopback
  baseline, between native Python peers on a workload's virtual loopback
  (in-memory pipes, no kernel);
* ``virtual-guest`` (round trip only): a wasm client guest talking to a wasm
  echo server guest over the virtual loopback, one invocation doing
  ``ROUNDS`` round trips;
* ``kernel-guest``: the same two guests, but the client reaches the server
  through an egress rule to the server's ingress port, so every byte crosses
  the kernel's loopback twice (the path fabric's virtual network replaces).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from benches.errors import ContenderSkipped
from benches.registry import Registry
from fabric.build import build_python_guest, stage_packages
from fabric.net import VirtualNetwork
from fabric.workload import manifest_from_dict
from fabric.workload.runtime import Fabric, WorkloadRuntime

ROOT = Path(__file__).resolve().parent.parent
NET_GUEST = ROOT / "tests" / "guests" / "net"
ECHO_PORT = 7
ROUNDS = 100


async def net_guest() -> Path:
    """The net test guest (``tests/guests/net``, with PyMySQL), from the build cache
    or built, off the loop."""
    return await asyncio.to_thread(
        build_python_guest, NET_GUEST, extra_paths=[stage_packages(["pymysql"])]
    )


class _VirtualEcho:
    """Native peers on one virtual network: one connection per concurrent worker."""

    group = "fabric"

    def __init__(self, env: Any) -> None:
        self.net: VirtualNetwork | None = None
        self._idle: list[tuple[Any, Any]] = []
        self._all: list[Any] = []

    async def setup(self) -> None:
        self.net = VirtualNetwork("bench-echo")

        async def echo(reader: Any, writer: Any) -> None:
            try:
                while data := await reader.read(1 << 20):
                    writer.write(data)
                    await writer.drain()
            finally:
                writer.close()

        await self.net.start_server(echo, ECHO_PORT)

    async def _exchange(self, payload: bytes) -> None:
        assert self.net is not None
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await self.net.open_connection(ECHO_PORT)
            self._all.append(writer)
        writer.write(payload)
        data = await reader.readexactly(len(payload))
        await writer.drain()
        if len(data) != len(payload):
            raise RuntimeError("short echo")
        self._idle.append((reader, writer))

    async def teardown(self) -> None:
        for writer in self._all:
            writer.close()
        if self.net is not None:
            await self.net.aclose()


class VirtualRoundTrip(_VirtualEcho):
    name = "virtual-native"
    description = "1-byte request/response between native peers on the virtual loopback"

    async def op(self) -> None:
        await self._exchange(b"x")


class VirtualBulk(_VirtualEcho):
    name = "virtual-native-bulk"
    description = "1 MiB echoed between native peers on the virtual loopback per op"
    bytes_per_op = 1 << 20
    _payload = bytes(range(256)) * (4096)

    async def op(self) -> None:
        await self._exchange(self._payload)


class KernelConnect:
    name = "tcp-loopback-connect"
    group = "loopback"
    description = "open a kernel loopback TCP connection to the echo server, exchange 1 byte, close"

    def __init__(self, env: Any) -> None:
        self.env = env

    async def setup(self) -> None:
        self.address = await self.env.echo_server()

    async def op(self) -> None:
        reader, writer = await asyncio.open_connection(*self.address)
        writer.write(b"x")
        await reader.readexactly(1)
        writer.close()
        await writer.wait_closed()

    async def teardown(self) -> None:
        return None


class VirtualConnect(_VirtualEcho):
    name = "virtual-native-connect"
    description = "the same on the virtual loopback (native peers)"

    async def op(self) -> None:
        assert self.net is not None
        reader, writer = await self.net.open_connection(ECHO_PORT)
        writer.write(b"x")
        await reader.readexactly(1)
        writer.close()
        await writer.wait_closed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _GuestRounds:
    """A client guest doing ``ROUNDS`` 1-byte round trips per invocation."""

    group = "fabric"
    max_concurrency = 8
    kernel = False

    def __init__(self, env: Any) -> None:
        self.fabric: Fabric | None = None
        self.workload: WorkloadRuntime | None = None

    async def setup(self) -> None:
        guest = await net_guest()
        host_port = _free_port()
        wl: dict[str, Any] = {
            "name": "bench-net",
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
        target_port = ECHO_PORT
        if self.kernel:
            wl["ingress"] = [{"host_port": host_port, "port": ECHO_PORT}]
            wl["egress"] = [{"dest": "echo.host", "port": 9, "to": f"127.0.0.1:{host_port}"}]
            target_port = 9
        self.args = [
            "rtt",
            "echo.host" if self.kernel else "127.0.0.1",
            str(target_port),
            str(ROUNDS),
        ]
        manifest = manifest_from_dict({"workloads": [wl]}, path="<bench>", base_dir=str(ROOT))
        self.fabric = Fabric(manifest, emit=lambda line: None)
        await self.fabric.start()
        self.workload = self.fabric.workloads["bench-net"]
        probe = await self.workload.invoke("client", None, self.args)
        if probe["exit_code"] != 0:
            raise ContenderSkipped(f"client guest failed: {probe['stderr'][-200:]}")

    async def op(self) -> None:
        assert self.workload is not None
        result = await self.workload.invoke("client", None, self.args)
        if result["exit_code"] != 0:
            raise RuntimeError(result["stderr"][-300:])

    async def teardown(self) -> None:
        if self.fabric is not None:
            await self.fabric.stop()


class VirtualGuestRounds(_GuestRounds):
    name = f"virtual-guest x{ROUNDS}"
    description = (
        f"wasm client -> wasm echo service over the virtual loopback, {ROUNDS} round trips"
    )


class KernelGuestRounds(_GuestRounds):
    name = f"kernel-guest x{ROUNDS}"
    description = (
        f"the same guests through egress -> kernel loopback -> ingress, {ROUNDS} round trips"
    )
    kernel = True


def register(registry: Registry) -> None:
    registry.add_contender("loopback-rtt", VirtualRoundTrip)
    registry.add_contender("loopback-bulk", VirtualBulk)
    registry.add_scenario(
        "loopback-connect",
        title="Loopback: connections per second",
        description="Open a connection, exchange one byte, close: kernel loopback vs virtual.",
        baseline=KernelConnect.name,
    )
    registry.add_contender("loopback-connect", KernelConnect)
    registry.add_contender("loopback-connect", VirtualConnect)
    registry.add_scenario(
        "guest-rtt",
        title=f"Guest to guest: {ROUNDS} one-byte round trips per invocation",
        description=(
            "A wasm echo service and a wasm client component (componentize-py) in one "
            "workload. Virtual loopback vs the same guests over the kernel's loopback "
            "(egress to the service's ingress port). One op = one fresh client instance "
            f"doing {ROUNDS} round trips."
        ),
        baseline=KernelGuestRounds.name,
        levels=(1, 8),
    )
    registry.add_contender("guest-rtt", KernelGuestRounds)
    registry.add_contender("guest-rtt", VirtualGuestRounds)
