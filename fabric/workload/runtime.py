"""Running workloads: the glue between manifests, the engine and the network.

``WorkloadRuntime`` owns one workload: its virtual network, its services
under a ``Supervisor`` (wasm via :class:`~fabric.workload.wasm.WasmService`,
native via ``NativeRunner``), its components (loaded once, instantiated
fresh for every invocation behind an ``Admission`` limit) and its links.
``Fabric`` runs every workload of a manifest in one process, answers the
control endpoint, and shuts down in order: stop admitting, drain in-flight
invocations within the grace period, stop services, close networks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fabric.engine import Component, GuestExit, Linker
from fabric.net import EgressRule as NetEgress
from fabric.net import IngressRule as NetIngress
from fabric.net import NetworkPolicy, Role, VirtualNetwork
from fabric.runtime import Runtime, run_export
from fabric.wasi import WasiConfig, WasiCtx

from .admission import Admission
from .control import ControlServer
from .errors import NotFound, UnfilledImports, WorkloadError
from .manifest import ComponentSpec, Manifest, WorkloadSpec
from .native import NativeRunner, load_service_class
from .status import StatusReport, WorkloadStatus
from .supervisor import Supervisor
from .wasm import LineSink, WasmService, link_interface, preopens, resolve_export

_log = logging.getLogger("fabric.workload")

#: The pure-Python dbpool client, put on the path of guests built from source.
GUEST_SDK = Path(__file__).resolve().parent.parent.parent / "services" / "dbpool" / "guest"


def _policy(spec: WorkloadSpec) -> NetworkPolicy:
    egress = []
    for rule in spec.egress:
        host, port = rule.dest, rule.port
        if rule.to:
            host, _, p = rule.to.rpartition(":")
            port = int(p)
        egress.append(
            NetEgress(destination=rule.dest, port=rule.port, target_host=host, target_port=port)
        )
    ingress = [
        NetIngress(
            port=r.port, host_port=r.host_port, host=r.host, max_connections=r.max_connections
        )
        for r in spec.ingress
    ]
    return NetworkPolicy(egress=tuple(egress), ingress=tuple(ingress), names=dict(spec.names))


def _is_command(component: Component) -> bool:
    return any(name.startswith("wasi:cli/run@") for name in component.exports)


class _ComponentEntry:
    def __init__(self, spec: ComponentSpec, component: Component, linker: Linker) -> None:
        self.spec = spec
        self.component = component
        self.linker = linker
        self.admission = Admission(spec.name, spec.concurrency, spec.queue)
        self.seq = 0


class WorkloadRuntime:
    """One workload of a manifest, running."""

    def __init__(
        self,
        spec: WorkloadSpec,
        runtime: Runtime,
        *,
        python_path: Sequence[str] = (),
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.runtime = runtime
        self.python_path = tuple(python_path)
        self.emit = emit or (lambda line: print(line, flush=True))
        self.network = VirtualNetwork(spec.name, _policy(spec))
        self.supervisor = Supervisor(name=spec.name)
        self.components: dict[str, _ComponentEntry] = {}
        self._service_components: dict[str, tuple[Component, Linker]] = {}
        self._loaded = False
        self.started_at = 0.0

    # -- loading ------------------------------------------------------------
    async def _load(self, path: str) -> Component:
        # Compiling a component takes seconds the first time; keep the loop free.
        return await asyncio.to_thread(self.runtime.engine.load, path)

    async def _build(self, source: str | None, world: str) -> str:
        from fabric.build import build_python_guest

        assert source is not None
        path = await asyncio.to_thread(
            build_python_guest, Path(source), world=world, extra_paths=[GUEST_SDK]
        )
        return str(path)

    async def load(self) -> None:
        """Load every wasm file, wire links, and refuse to start with unfilled imports."""
        loaded: dict[str, Component] = {}
        for c in self.spec.components:
            wasm = c.wasm if c.wasm is not None else await self._build(c.python, c.world)
            loaded[c.name] = await self._load(wasm)
        for s in self.spec.services:
            if s.wasm is not None:
                loaded[s.name] = await self._load(s.wasm)
        linkers: dict[str, Linker] = {}
        for link in self.spec.links:
            importer = loaded.get(link.importer)
            target = loaded.get(link.component)
            if importer is None or target is None:
                raise WorkloadError(
                    f"workload {self.name!r}: link {link.importer} -> {link.component} "
                    "names no wasm guest"
                )
            linker = linkers.get(link.importer)
            if linker is None:
                linker = linkers[link.importer] = self.runtime.new_linker()
            linker.define(
                link_interface(
                    importer, link.interface, target, self._linked_invoker(link.component)
                )
            )
        problems: list[str] = []
        for name, comp in loaded.items():
            missing = (linkers.get(name) or self.runtime.linker).missing_imports(comp)
            if missing:
                problems.append(f"{name}: {', '.join(missing)}")
        if problems:
            raise UnfilledImports(f"workload {self.name}", problems)
        for c in self.spec.components:
            self.components[c.name] = _ComponentEntry(
                c, loaded[c.name], linkers.get(c.name, self.runtime.linker)
            )
        for s in self.spec.services:
            if s.wasm is not None:
                self._service_components[s.name] = (
                    loaded[s.name],
                    linkers.get(s.name, self.runtime.linker),
                )
        self._loaded = True

    def _linked_invoker(self, component: str) -> Callable[[str, Sequence[Any]], Any]:
        async def call(path: str, args: Sequence[Any]) -> Any:
            return await self.invoke(component, path, list(args), resolved=True)

        return call

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        if not self._loaded:
            await self.load()
        self.started_at = time.time()
        for s in self.spec.services:
            factory: Callable[[], Any]
            if s.wasm is not None:
                comp, linker = self._service_components[s.name]
                factory = functools.partial(WasmService, self, s, comp, linker)
            else:
                assert s.native is not None
                factory = functools.partial(
                    NativeRunner,
                    load_service_class(s.native, self.python_path),
                    config=s.config,
                    workload=self.name,
                    service=s.name,
                    network=self.network,
                    ports=s.ports,
                    invoker=self.invoke,
                    env=s.env,
                )
            self.supervisor.add(
                s.name,
                factory,
                policy=s.restart.policy(),
                ready_timeout=float(s.ready_timeout),
                stop_timeout=float(s.stop_timeout),
                kind=s.kind,
                ports=s.ports,
            )
        await self.supervisor.start()
        await self.network.start_ingress()

    async def drain(self, grace: float) -> None:
        for entry in self.components.values():
            entry.admission.close()
        waits = [entry.admission.wait_idle() for entry in self.components.values()]
        if waits:
            try:
                async with asyncio.timeout(grace):
                    await asyncio.gather(*waits)
            except TimeoutError:
                _log.warning("workload %s: invocations still running after %.1fs", self.name, grace)

    async def stop(self) -> None:
        await self.supervisor.stop()
        await self.network.aclose()

    # -- invocations ------------------------------------------------------------
    async def invoke(
        self,
        component: str,
        export: str | None = None,
        args: Sequence[Any] = (),
        *,
        resolved: bool = False,
    ) -> Any:
        """Run a component once in a fresh instance.

        Without ``export`` the component's ``wasi:cli/run`` runs with ``args``
        as its arguments, and the result is ``{"exit_code", "stdout",
        "stderr"}``; with ``export`` that export is called with ``args`` and
        its result returned.
        """
        entry = self.components.get(component)
        if entry is None:
            raise NotFound(f"workload {self.name!r} has no component {component!r}")
        if export in ("run", "wasi:cli/run") and _is_command(entry.component):
            export = None  # run the command with ``args`` as its arguments
        spec = entry.spec
        async with entry.admission.slot():
            entry.seq += 1
            guest = f"{component}#{entry.seq}"
            prefix = f"{self.name}/{guest}"
            out = bytearray()
            err = bytearray()
            logged = LineSink(prefix, self.emit)

            def tee_err(data: bytes) -> None:
                err.extend(data)
                logged(data)

            guest_net = self.network.attach(guest, Role.COMPONENT)
            argv = [component, *(str(a) for a in args)] if export is None else [component]
            ctx = WasiCtx(
                WasiConfig(args=argv, env=dict(spec.env), preopens=preopens(spec.dirs)),
                name=prefix,
                stdout=out.extend,
                stderr=tee_err,
                sockets=guest_net,
            )
            max_memory = int(spec.max_memory) if spec.max_memory else None
            timeout = float(spec.timeout)
            try:
                if export is None:
                    code = await self.runtime.run_command(
                        entry.component,
                        ctx,
                        timeout=timeout,
                        max_memory=max_memory,
                        linker=entry.linker,
                    )
                    return {
                        "exit_code": code,
                        "stdout": out.decode("utf-8", "replace"),
                        "stderr": err.decode("utf-8", "replace"),
                    }
                path = export if resolved else resolve_export(entry.component, export)
                deadline = time.monotonic() + timeout
                inst = await self.runtime.instantiate(
                    entry.component,
                    ctx,
                    max_memory=max_memory,
                    timeout=timeout,
                    linker=entry.linker,
                )
                try:
                    return await inst.call(
                        path, *args, timeout=max(deadline - time.monotonic(), 0.0)
                    )
                except GuestExit as e:
                    raise WorkloadError(
                        f"{component} exited with code {e.code} during {path}"
                    ) from None
                finally:
                    inst.store.close()
            finally:
                logged.flush()
                guest_net.close()

    def status(self) -> WorkloadStatus:
        return WorkloadStatus(
            name=self.name,
            services=self.supervisor.statistics().services,
            components=tuple(e.admission.statistics() for e in self.components.values()),
        )

    def __repr__(self) -> str:
        return (
            f"<WorkloadRuntime {self.name} services={len(self.spec.services)} "
            f"components={len(self.components)}>"
        )


class Fabric:
    """Every workload of a manifest, in one process, behind one control endpoint."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        runtime: Runtime | None = None,
        control_path: str | None = None,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.manifest = manifest
        self.runtime = runtime or Runtime()
        self._own_runtime = runtime is None
        self.emit = emit
        self.workloads = {
            w.name: WorkloadRuntime(
                w,
                self.runtime,
                python_path=[os.path.join(manifest.directory, p) for p in manifest.python_path],
                emit=emit,
            )
            for w in manifest.workloads
        }
        self.control_path = control_path
        self.control: ControlServer | None = None
        self.started_at = 0.0
        self.draining = False

    async def start(self) -> None:
        for wl in self.workloads.values():
            await wl.load()
        for wl in self.workloads.values():
            await wl.start()
        self.started_at = time.time()
        if self.control_path:
            self.control = ControlServer(self, self.control_path)
            await self.control.start()

    async def stop(self) -> None:
        self.draining = True
        if self.control is not None:
            self.control.stop_invocations()
        grace = float(self.manifest.grace)
        await asyncio.gather(*(wl.drain(grace) for wl in self.workloads.values()))
        for wl in reversed(list(self.workloads.values())):
            await wl.stop()
        if self.control is not None:
            await self.control.close(grace=1.0)
        if self._own_runtime:
            self.runtime.close()

    # -- ControlTarget ------------------------------------------------------------
    def status(self) -> StatusReport:
        return StatusReport(
            manifest=self.manifest.path,
            pid=os.getpid(),
            started_at=self.started_at,
            draining=self.draining,
            workloads=tuple(wl.status() for wl in self.workloads.values()),
        )

    async def invoke(
        self, workload: str, component: str, export: str | None, args: list[Any]
    ) -> Any:
        from .wasm import to_jsonable

        wl = self.workloads.get(workload)
        if wl is None:
            raise NotFound(f"no workload named {workload!r}")
        return to_jsonable(await wl.invoke(component, export, args))


def default_emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


__all__ = ["Fabric", "WorkloadRuntime", "default_emit", "run_export"]
