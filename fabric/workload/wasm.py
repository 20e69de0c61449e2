"""Wasm guests inside a workload: services, invocations, links, guest output.

* :class:`WasmService` runs a ``wasi:cli/run`` component as a supervised
  service (a ``Runnable``): it gets the *service* role on the workload's
  network and is ready once it listens on its declared ports.
* :func:`link_interface` builds the host side of a link: an interface that a
  service (or component) imports, each function of which instantiates the
  linked component afresh and calls the matching export.
* :func:`resolve_export` turns what a user types (``run``,
  ``fabric:guests/job#run``, ``job#run``) into an export path.
* :class:`LineSink` prefixes a guest's output lines with its name.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from fabric.engine import Component, Err, GuestTrap, HostInterface, Ok
from fabric.net import Role
from fabric.wasi import Preopen, WasiConfig, WasiCtx

from .errors import NotFound, WorkloadError

if TYPE_CHECKING:
    from fabric.engine import Linker
    from fabric.net import VirtualNetwork
    from fabric.runtime import Runtime

    from .manifest import DirSpec, ServiceSpec


class WorkloadHost(Protocol):
    """What a wasm service needs of its workload (`WorkloadRuntime` is one)."""

    name: str
    runtime: Runtime
    network: VirtualNetwork
    emit: Callable[[str], None]


_log = logging.getLogger("fabric.guest")

Invoke = Callable[[str, Sequence[Any]], Awaitable[Any]]


class LineSink:
    """Collects a guest's output and emits it line by line with a prefix.

    A line longer than ``max_line`` bytes is emitted in pieces of that size, so
    output without newlines cannot grow the buffer without bound.
    """

    def __init__(
        self, prefix: str, emit: Callable[[str], None] | None = None, max_line: int = 64 * 1024
    ) -> None:
        self.prefix = prefix
        self._emit = emit or (lambda line: _log.info("%s", line))
        self._buf = b""
        self._max_line = max_line
        self.lines = 0

    def __call__(self, data: bytes) -> None:
        *complete, rest = (self._buf + data).split(b"\n")
        for line in complete:
            self._pieces(line)
        self._buf = b""
        while len(rest) >= self._max_line:
            self._line(rest[: self._max_line])
            rest = rest[self._max_line :]
        self._buf = rest

    def _pieces(self, line: bytes) -> None:
        while len(line) > self._max_line:
            self._line(line[: self._max_line])
            line = line[self._max_line :]
        self._line(line)

    def _line(self, line: bytes) -> None:
        self.lines += 1
        self._emit(f"[{self.prefix}] {line.decode('utf-8', 'replace')}")

    def flush(self) -> None:
        if self._buf:
            line, self._buf = self._buf, b""
            self._line(line)


def preopens(dirs: Sequence[DirSpec]) -> list[Preopen]:
    return [Preopen(host=d.host, guest=d.guest, readonly=d.readonly) for d in dirs]


class GuestExitError(WorkloadError):
    """A wasm service's ``run`` returned an error exit code."""


class WasmService:
    """One run of a wasm service under the supervisor (build one per start)."""

    def __init__(
        self,
        workload: WorkloadHost,
        spec: ServiceSpec,
        component: Component,
        linker: Linker,
    ) -> None:
        self.workload = workload
        self.spec = spec
        self.component = component
        self.linker = linker
        self.exit_code: int | None = None

    async def run(self) -> None:
        spec = self.spec
        wl = self.workload
        prefix = f"{wl.name}/{spec.name}"
        out, err = LineSink(prefix, wl.emit), LineSink(prefix, wl.emit)
        guest_net = wl.network.attach(spec.name, Role.SERVICE)
        ctx = WasiCtx(
            WasiConfig(
                args=[spec.name, *spec.args], env=dict(spec.env), preopens=preopens(spec.dirs)
            ),
            name=prefix,
            stdout=out,
            stderr=err,
            sockets=guest_net,
        )
        try:
            self.exit_code = await wl.runtime.run_command(
                self.component,
                ctx,
                max_memory=int(spec.max_memory) if spec.max_memory else None,
                linker=self.linker,
            )
        finally:
            out.flush()
            err.flush()
            guest_net.close()
        if self.exit_code != 0:
            raise GuestExitError(f"exited with code {self.exit_code}")

    def is_ready(self) -> bool:
        return all(self.workload.network.is_listening(port) for port in self.spec.ports)

    def stats(self) -> Any:
        return None


def _base(name: str) -> str:
    return name.split("@", 1)[0]


def find_interface(names: Sequence[str], wanted: str) -> str | None:
    """The versioned name in ``names`` matching ``wanted`` (versioned or not)."""
    for name in names:
        if name == wanted or _base(name) == _base(wanted):
            return name
    return None


def resolve_export(component: Component, export: str) -> str:
    """Map a user's export name to the component's export path."""
    exports = component.exports
    if "#" in export:
        iface, _, func = export.partition("#")
        full = find_interface(list(exports), iface)
        if full is None:
            # "job#run" for "fabric:guests/job@x#run"
            full = next(
                (n for n in exports if _base(n).rsplit("/", 1)[-1] == iface and exports[n]), None
            )
        if full is None or func not in exports[full]:
            raise NotFound(f"{component.path}: no export {export!r}")
        return f"{full}#{func}"
    if export in exports and not exports[export]:
        return export  # a top-level function export
    matches = [f"{name}#{export}" for name, funcs in exports.items() if export in funcs]
    matches = [m for m in matches if not m.startswith("exports#")]  # componentize-py's own
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFound(f"{component.path}: no export named {export!r}")
    raise NotFound(f"{component.path}: {export!r} is ambiguous: {', '.join(matches)}")


def link_interface(
    importer: Component, interface: str, target: Component, invoke: Invoke
) -> HostInterface:
    """The host side of a link: ``importer``'s import of ``interface``, served by
    calling ``target``'s export of the same interface (fresh instance per call)."""
    imported = find_interface(list(importer.imports), interface)
    if imported is None:
        raise WorkloadError(f"{importer.path} does not import {interface}")
    exported = find_interface(list(target.exports), interface)
    if exported is None:
        raise WorkloadError(f"{target.path} does not export {interface}")
    iface = HostInterface(imported)
    for func in importer.imports[imported]:
        if func not in target.exports[exported]:
            raise WorkloadError(f"{target.path} does not export {exported}#{func}")
        iface.func(func, _forwarder(f"{exported}#{func}", invoke), is_async=True)
    return iface


def _forwarder(path: str, invoke: Invoke) -> Callable[..., Awaitable[Any]]:
    async def forward(cx: Any, *args: Any) -> Any:
        try:
            return await invoke(path, args)
        except GuestTrap as e:
            raise WorkloadError(f"linked call {path} failed: {e.message}") from e

    return forward


def to_jsonable(value: Any) -> Any:
    """A lifted component value as plain JSON data (for ``fabric invoke``)."""
    if isinstance(value, Ok):
        return {"ok": to_jsonable(value.value)}
    if isinstance(value, Err):
        return {"err": to_jsonable(value.value)}
    if isinstance(value, bytes | bytearray):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value
