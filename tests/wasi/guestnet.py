"""Run test guests on a virtual network and read what they print.

``Guest`` runs one ``wasi:cli/command`` guest as a task attached to a
``VirtualNetwork`` with a role; ``wait_fact`` waits for a ``key=value`` line
while it runs (a server's ``listening=PORT``), ``finish`` waits for it to end.
``run_wasmtime`` runs the same guest under the wasmtime CLI (the reference),
off the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fabric.engine import GuestTrap
from fabric.net import GuestNetwork, Role, VirtualNetwork
from fabric.runtime import Runtime
from fabric.wasi import WasiConfig, WasiCtx
from tests.reference.wasmtime_cli import GuestResult, parse_facts, run_guest

__all__ = ["TIMEOUT", "Guest", "Outcome", "run", "run_wasmtime"]

#: Only there to turn a hang into a failure; nothing here is timed.
TIMEOUT = 60.0


@dataclass(frozen=True)
class Outcome:
    """How a guest run ended: an exit code, or ``None`` when it trapped."""

    code: int | None
    stdout: str
    stderr: str
    trap: str = ""
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def trapped(self) -> bool:
        return self.code is None

    def check(self) -> Outcome:
        assert self.code == 0, f"guest ended with {self.code}: {self.trap}\n{self.stderr}"
        return self


class Guest:
    """One guest instance running on ``network`` as ``name`` with ``role``."""

    def __init__(
        self,
        runtime: Runtime,
        wasm: Path,
        network: VirtualNetwork | None,
        *args: str,
        role: Role = Role.COMPONENT,
        name: str = "guest",
        sockets: Any = None,
    ) -> None:
        self.name = name
        self._out = bytearray()
        self._err = bytearray()
        self._changed = asyncio.Event()
        self.handle: GuestNetwork | None = None
        if network is not None:
            self.handle = sockets = network.attach(name, role)
        ctx = WasiCtx(
            WasiConfig(args=[name, *args]),
            name=name,
            stdout=self._stdout,
            stderr=self._err.extend,
            sockets=sockets,
        )
        component = runtime.load(wasm)
        self.task = asyncio.ensure_future(runtime.run_command(component, ctx, timeout=TIMEOUT))
        # A test that fails before finish() must not leave an unretrieved trap behind.
        self.task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _stdout(self, data: bytes) -> None:
        self._out.extend(data)
        self._changed.set()

    @property
    def facts(self) -> dict[str, str]:
        return parse_facts(self._out.decode(errors="replace"))

    async def wait_fact(self, key: str) -> str:
        """Wait until the guest printed ``key=...`` (fails if it ends first)."""
        async with asyncio.timeout(TIMEOUT):
            while key not in (facts := self.facts):
                if self.task.done():
                    outcome = await self.finish()
                    raise AssertionError(f"{self.name} ended before printing {key}: {outcome}")
                self._changed.clear()
                waiter = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait([waiter, self.task], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
        return facts[key]

    async def finish(self) -> Outcome:
        """Wait for the guest to end."""
        code: int | None
        trap = ""
        try:
            async with asyncio.timeout(TIMEOUT):
                code = await asyncio.shield(self.task)
        except GuestTrap as e:
            code, trap = None, str(e)
        out = self._out.decode(errors="replace")
        return Outcome(code, out, self._err.decode(errors="replace"), trap, parse_facts(out))

    async def stop(self) -> None:
        """Cancel a guest that would run forever (a server)."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def __repr__(self) -> str:
        return f"<Guest {self.name} done={self.task.done()} facts={len(self.facts)}>"


async def run(
    runtime: Runtime,
    wasm: Path,
    network: VirtualNetwork | None,
    *args: str,
    role: Role = Role.COMPONENT,
    name: str = "guest",
    sockets: Any = None,
) -> Outcome:
    """Run a guest to its end."""
    guest = Guest(runtime, wasm, network, *args, role=role, name=name, sockets=sockets)
    return await guest.finish()


async def run_wasmtime(wasm: Path, *args: str, **options: Any) -> GuestResult:
    """Run a guest under the wasmtime CLI with real sockets (in a thread)."""
    return await asyncio.to_thread(run_guest, wasm, *args, **options)
