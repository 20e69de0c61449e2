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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from fabric.engine import Component, EngineConfig, GuestExit, Linker, Ok
from fabric.net import EgressRule as NetEgress
from fabric.net import IngressRule as NetIngress
from fabric.net import NetworkPolicy, Role, VirtualNetwork
from fabric.runtime import Runtime, run_export
from fabric.wasi import WasiConfig, WasiCtx

from .admission import Admission
from .control import ControlServer
from .egress import resolve_target
from .errors import NotFound, UnfilledImports, WorkloadError
from .manifest import ComponentSpec, Manifest, WorkloadSpec
from .metrics_server import MetricsServer, serve_metrics
from .native import (
    NativeRunner,
    load_service_class,
    offered_guest_paths,
    offered_host_imports,
)
from .reuse import InstancePool, PooledInstance, retire_reason
from .shares import WorkerSlot, config_for_worker
from .status import ComponentStatus, StatusReport, WorkloadStatus
from .streaming import OutputFactory
from .supervisor import Supervisor
from .threads import in_daemon_thread
from .wasm import (
    LineSink,
    WasmService,
    find_interface,
    link_interface,
    preopens,
    resolve_export,
)

_log = logging.getLogger("fabric.workload")

#: The pure-Python dbpool client, put on the path of guests built from source.


def _policy(spec: WorkloadSpec, *, reuse_port: bool = False) -> NetworkPolicy:
    egress = []
    for rule in spec.egress:
        host, port = rule.dest, rule.port
        if rule.to:
            host, _, p = rule.to.rpartition(":")
            port = int(p)
        # resolved once, here at load: DNS does not decide later where connections go
        target = resolve_target(host, port)
        egress.append(
            NetEgress(destination=rule.dest, port=rule.port, target_host=target, target_port=port)
        )
    ingress = [
        NetIngress(
            port=r.port,
            host_port=r.host_port,
            host=r.host,
            max_connections=r.max_connections,
            reuse_port=reuse_port,  # the workers of `fabric run --workers N` share host ports
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
        self.instances = 0  # instances created (names their network attachments)
        self.preopens = preopens(spec.dirs)  # copied into each invocation's WasiConfig
        self.pool: InstancePool | None = None
        if spec.reuse is not None:
            self.pool = InstancePool(
                spec.name,
                max_invocations=spec.reuse.max_invocations,
                pool_size=spec.reuse.pool_size,
                idle=float(spec.reuse.idle),
            )

    @functools.cached_property
    def run_export(self) -> str:
        """The ``wasi:cli/run`` export (raises for a component that is not a command)."""
        return run_export(self.component)

    def statistics(self) -> ComponentStatus:
        status = self.admission.statistics()
        if self.pool is None:
            return status
        return msgspec.structs.replace(status, pool=self.pool.statistics())


class WorkloadRuntime:
    """One workload of a manifest, running."""

    def __init__(
        self,
        spec: WorkloadSpec,
        runtime: Runtime,
        *,
        python_path: Sequence[str] = (),
        emit: Callable[[str], None] | None = None,
        worker: WorkerSlot | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.runtime = runtime
        self.python_path = tuple(python_path)
        self.emit = emit or (lambda line: print(line, flush=True))
        #: which worker of ``fabric run --workers N`` this is (services see it)
        self.worker = worker if worker is not None else WorkerSlot()
        self.network = VirtualNetwork(spec.name, _policy(spec, reuse_port=self.worker.replicated))
        self.supervisor = Supervisor(name=spec.name)
        self.components: dict[str, _ComponentEntry] = {}
        self._service_components: dict[str, tuple[Component, Linker]] = {}
        #: in-process handles published by native services (by service name)
        self.handles: dict[str, Any] = {}
        self._loaded = False
        self.started_at = 0.0

    # -- loading ------------------------------------------------------------
    async def _load(self, path: str) -> Component:
        # Compiling a component takes seconds the first time; keep the loop free.
        return await in_daemon_thread(self.runtime.engine.load, path)

    async def _build(self, source: str | None, world: str) -> str:
        from fabric.build import build_python_guest

        assert source is not None
        natives = [s.native for s in self.spec.services if s.native is not None]
        sdk = offered_guest_paths(natives, self.python_path)
        path = await in_daemon_thread(
            functools.partial(build_python_guest, Path(source), world=world, extra_paths=sdk)
        )
        return str(path)

    async def _fast_bytes(self, wasm: str, enabled: bool) -> str:
        """``wasm``, or with ``fast_bytes`` the guest composed to move its stream
        bytes as latin-1 strings (docs/bytes-as-strings.md), built once and cached."""
        if not enabled:
            return wasm
        from fabric.compose import build_fast_bytes_guest

        return str(await in_daemon_thread(build_fast_bytes_guest, wasm))

    async def load(self) -> None:
        """Load every wasm file, wire links, and refuse to start with unfilled imports."""
        loaded: dict[str, Component] = {}
        for c in self.spec.components:
            wasm = c.wasm if c.wasm is not None else await self._build(c.python, c.world)
            loaded[c.name] = await self._load(await self._fast_bytes(wasm, c.fast_bytes))
        for s in self.spec.services:
            if s.wasm is not None:
                loaded[s.name] = await self._load(await self._fast_bytes(s.wasm, s.fast_bytes))
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
        self._define_host_imports(loaded, linkers)
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

    def _define_host_imports(
        self, loaded: Mapping[str, Component], linkers: dict[str, Linker]
    ) -> None:
        """Define each interface the workload's native services serve in the linker of
        every guest that imports it (giving that guest a linker of its own)."""
        natives = [s.native for s in self.spec.services if s.native is not None]
        for offered in offered_host_imports(natives, self.python_path):
            for name, component in loaded.items():
                imported = find_interface(list(component.imports), offered.interface)
                if imported is None:
                    continue
                linker = linkers.get(name)
                if linker is None:
                    linker = linkers[name] = self.runtime.new_linker()
                linker.define(offered(self.handles.values, imported))

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
                cls = load_service_class(s.native, self.python_path)
                factory = functools.partial(
                    NativeRunner,
                    cls,
                    # with several workers, the class's share of what the service holds
                    config=self._native_config(cls, s.name, s.config),
                    workload=self.name,
                    service=s.name,
                    network=self.network,
                    ports=s.ports,
                    invoker=self.invoke,
                    env=s.env,
                    handles=self.handles,
                    worker=self.worker,
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

    def _native_config(self, cls: type, service: str, config: Mapping[str, Any]) -> Any:
        try:
            return config_for_worker(cls, config, self.worker)
        except ValueError as exc:  # the manifest check refuses this before anything starts
            raise WorkloadError(
                f"workload {self.name!r}: service {service!r} cannot run in "
                f"{self.worker.count} workers: {exc}"
            ) from None

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
        for entry in self.components.values():
            if entry.pool is not None:
                entry.pool.close()
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
        output: OutputFactory | None = None,
    ) -> Any:
        """Run a component once, in a fresh instance (or a warm one: ``reuse``).

        Without ``export`` the component's ``wasi:cli/run`` runs with ``args``
        as its arguments, and the result is ``{"exit_code", "stdout",
        "stderr"}``; with ``export`` that export is called with ``args`` and
        its result returned.  With ``output`` the guest's stdout and stderr go
        to the streams it makes as the guest writes (and the result holds
        neither).
        """
        entry = self.components.get(component)
        if entry is None:
            raise NotFound(f"workload {self.name!r} has no component {component!r}")
        if export in ("run", "wasi:cli/run") and _is_command(entry.component):
            export = None  # run the command with ``args`` as its arguments
        argv: list[str] = [component]
        if export is None:
            argv.extend(map(str, args))
            if "\0" in "".join(argv):
                raise WorkloadError(f"{component}: an argument contains a NUL byte")
        admission = entry.admission
        arrived = admission.enter_now()
        if arrived is None:
            arrived = await admission.enter()
        try:
            result = await self._invoke_admitted(
                entry, component, export, args, argv, resolved=resolved, output=output
            )
        except BaseException:
            admission.leave(arrived, failed=True)
            raise
        admission.leave(arrived, failed=False)
        return result

    async def _invoke_admitted(
        self,
        entry: _ComponentEntry,
        component: str,
        export: str | None,
        args: Sequence[Any],
        argv: list[str],
        *,
        resolved: bool,
        output: OutputFactory | None,
    ) -> Any:
        """`invoke` once admitted: ``argv`` is the command's arguments (its name
        alone for an export call)."""
        spec = entry.spec
        entry.seq += 1
        guest = f"{component}#{entry.seq}"
        prefix = f"{self.name}/{guest}"
        out = bytearray()
        err = bytearray()
        logged = LineSink(prefix, self.emit)

        def tee_err(data: bytes) -> None:
            if export is None:  # an export call returns its result, not its output
                err.extend(data)
            logged(data)

        def keep_out(data: bytes) -> None:
            if export is None:
                out.extend(data)

        def command_result(code: int) -> dict[str, Any]:
            return {
                "exit_code": code,
                "stdout": out.decode("utf-8", "replace"),
                "stderr": err.decode("utf-8", "replace"),
            }

        config = WasiConfig(args=argv, env=dict(spec.env), preopens=list(entry.preopens))
        if entry.pool is not None:
            try:
                result = await self._invoke_pooled(
                    entry,
                    entry.pool,
                    export,
                    args,
                    config,
                    prefix,
                    keep_out,  # a warm instance's output is returned whole, not streamed
                    tee_err,
                    resolved=resolved,
                )
            finally:
                logged.flush()
            return result if export is not None else command_result(result)
        # the guest's network handle is made when it first asks for it
        attach = functools.partial(self.network.attach, guest, Role.COMPONENT)
        ctx = WasiCtx(config, name=prefix, stdout=keep_out, stderr=tee_err, attach=attach)
        if output is not None and export is None:
            ctx.stdout = output("stdout", None)
            ctx.stderr = output("stderr", logged)
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
                    export=entry.run_export,
                )
                return command_result(code)
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
                return await inst.call(path, *args, timeout=max(deadline - time.monotonic(), 0.0))
            except GuestExit as e:
                raise WorkloadError(
                    f"{component} exited with code {e.code} during {path}"
                ) from None
            finally:
                inst.store.close()
        finally:
            logged.flush()
            ctx.close()

    async def _invoke_pooled(
        self,
        entry: _ComponentEntry,
        pool: InstancePool,
        export: str | None,
        args: Sequence[Any],
        config: WasiConfig,
        prefix: str,
        stdout: Callable[[bytes], Any],
        stderr: Callable[[bytes], Any],
        *,
        resolved: bool,
    ) -> Any:
        """One invocation in a warm instance, or in a fresh one that may stay warm.

        Returns the exit code of ``wasi:cli/run`` (without ``export``) or the
        export's result.  Only a clean return gives the instance back."""
        spec = entry.spec
        timeout = float(spec.timeout)
        deadline = time.monotonic() + timeout
        if export is None:
            path = entry.run_export
        else:
            path = export if resolved else resolve_export(entry.component, export)
        item = pool.take()
        if item is None:
            entry.instances += 1
            guest_net = self.network.attach(f"{spec.name}@{entry.instances}", Role.COMPONENT)
            ctx = WasiCtx(config, name=prefix, stdout=stdout, stderr=stderr, sockets=guest_net)
            try:
                inst = await self.runtime.instantiate(
                    entry.component,
                    ctx,
                    max_memory=int(spec.max_memory) if spec.max_memory else None,
                    timeout=timeout,
                    linker=entry.linker,
                )
            except BaseException:
                ctx.close()
                raise
            item = PooledInstance(inst, ctx)
            pool.start()
        else:
            item.ctx.rebind(config, name=prefix, stdout=stdout, stderr=stderr)
        call_args = () if export is None else tuple(args)
        item.uses += 1
        try:
            result = await item.instance.call(
                path, *call_args, timeout=max(deadline - time.monotonic(), 0.0)
            )
        except BaseException as e:
            pool.retire(item, retire_reason(e))
            if isinstance(e, GuestExit):
                if export is None:
                    return e.code
                raise WorkloadError(
                    f"{spec.name} exited with code {e.code} during {path}"
                ) from None
            raise
        if export is None and not isinstance(result, Ok):
            pool.retire(item, "exit")
            return 1
        pool.give_back(item)
        return 0 if export is None else result

    def status(self) -> WorkloadStatus:
        return WorkloadStatus(
            name=self.name,
            services=self.supervisor.statistics().services,
            components=tuple(e.statistics() for e in self.components.values()),
            ingress=self.network.statistics().ingress,
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
        worker: WorkerSlot | None = None,
    ) -> None:
        """``worker``: which worker of ``fabric run --workers N`` this process is
        (ingress listeners then share their host ports, native services get their
        share of what they hold: ``fabric.workload.shares``).  Without ``runtime``
        the fabric makes its own, holding at most the manifest's ``max_instances``
        component instances at once."""
        self.manifest = manifest
        self.worker = worker if worker is not None else WorkerSlot()
        self._own_runtime = runtime is None
        if runtime is None:
            limit = manifest.max_instances
            runtime = Runtime(None if limit is None else EngineConfig(pool_instances=limit))
        self.runtime = runtime
        self.emit = emit
        self.workloads = {
            w.name: WorkloadRuntime(
                w,
                self.runtime,
                python_path=[os.path.join(manifest.directory, p) for p in manifest.python_path],
                emit=emit,
                worker=self.worker,
            )
            for w in manifest.workloads
        }
        self.control_path = control_path
        self.control: ControlServer | None = None
        #: the metrics endpoint and health probes (``[metrics]``), from ``prepare`` on
        self.metrics: MetricsServer | None = None
        self.started_at = 0.0
        self.draining = False

    async def prepare(self) -> None:
        """Check the control socket path (``ControlError`` if it cannot be served)
        and open the metrics endpoint, before anything starts (so the probes answer
        during a long cold start); ``start`` does it when it has not been done."""
        if self.control_path and self.control is None:
            control = ControlServer(self, self.control_path)
            await control.prepare()
            self.control = control
        spec = self.manifest.metrics
        if spec is not None and self.metrics is None:
            self.metrics = await serve_metrics(spec, self.status)

    async def start(self) -> None:
        await self.prepare()
        for wl in self.workloads.values():
            await wl.load()
        for wl in self.workloads.values():
            await wl.start()
        self.started_at = time.time()
        if self.control is not None:
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
        if self.metrics is not None:
            await self.metrics.close()
        if self._own_runtime:
            self.runtime.close()

    # -- ControlTarget ------------------------------------------------------------
    def status(self) -> StatusReport:
        engine = self.runtime.engine
        return StatusReport(
            manifest=self.manifest.path,
            pid=os.getpid(),
            started_at=self.started_at,
            draining=self.draining,
            workloads=tuple(wl.status() for wl in self.workloads.values()),
            instances=engine.instances,
            instance_limit=engine.instance_limit or 0,
        )

    async def invoke(
        self,
        workload: str,
        component: str,
        export: str | None,
        args: list[Any],
        output: OutputFactory | None = None,
    ) -> Any:
        from .wasm import to_jsonable

        wl = self.workloads.get(workload)
        if wl is None:
            raise NotFound(f"no workload named {workload!r}")
        return to_jsonable(await wl.invoke(component, export, args, output=output))


def default_emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


__all__ = ["Fabric", "WorkloadRuntime", "default_emit", "run_export"]
