"""The workload manifest: TOML decoded into frozen msgspec Structs.

One file holds one or more ``[[workloads]]``; see ``docs/manifest.md`` for every
field.  Loading goes: read → ``tomllib`` → ``msgspec.convert`` (unknown keys
are errors) → relative paths resolved against the manifest's directory →
semantic checks (``checks.validate``).  Every error is a ``ManifestError``
whose lines read ``<file>:<line>: <field path>: <message>``, for example::

    shop.toml:12: workloads[1].services[0].restart.max_backoff: expected a duration like "30s", \
got true
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

import msgspec

from . import units
from ._decode_errors import format_path
from ._toml_lines import SourceMap
from .errors import ManifestIssue, NotFound
from .restart import RestartPolicy
from .units import ByteSize, Duration

__all__ = [
    "ComponentSpec",
    "DirSpec",
    "EgressRule",
    "IngressRule",
    "LinkSpec",
    "Manifest",
    "ManifestFile",
    "MetricsSpec",
    "RestartSpec",
    "ReuseSpec",
    "ServiceSpec",
    "WorkloadSpec",
    "resolve_path",
    "resolve_workload",
]

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Name = Annotated[str, msgspec.Meta(min_length=1)]
#: bounds of ``max_instances``: the pool reserves ~4 GiB of address space per
#: instance, and a 47-bit address space holds about 30,000 of them
MAX_INSTANCES = 30_000
InstanceCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_INSTANCES)]


class _Spec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of the manifest structs: immutable, keyword-only, unknown keys rejected."""


class RestartSpec(_Spec, frozen=True):
    """``restart = { ... }`` of a service."""

    mode: Literal["always", "on-failure", "never"] = "always"
    initial_backoff: Duration = Duration(0.1)
    max_backoff: Duration = Duration(30.0)
    multiplier: Annotated[float, msgspec.Meta(ge=1.0)] = 2.0
    jitter: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.1
    max_restarts: Annotated[int, msgspec.Meta(ge=0)] = 5
    window: Duration = Duration(60.0)
    reset_after: Duration = Duration(30.0)

    def policy(self) -> RestartPolicy:
        return RestartPolicy(
            mode=self.mode,
            initial_backoff=float(self.initial_backoff),
            max_backoff=float(self.max_backoff),
            multiplier=self.multiplier,
            jitter=self.jitter,
            max_restarts=self.max_restarts,
            window=float(self.window),
            reset_after=float(self.reset_after),
        )


class DirSpec(_Spec, frozen=True):
    """A preopened directory: host path (relative to the manifest) → guest path."""

    host: Name
    guest: Name
    readonly: bool = False


class ServiceSpec(_Spec, frozen=True):
    """A long-lived, supervised service: a wasm ``wasi:cli/run`` component or a native class."""

    name: Name
    wasm: Name | None = None
    native: Name | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = {}
    config: dict[str, Any] = {}
    ports: tuple[Port, ...] = ()
    dirs: tuple[DirSpec, ...] = ()
    max_memory: ByteSize | None = None
    #: stream bytes cross the C API as latin-1 strings (docs/bytes-as-strings.md)
    fast_bytes: bool = False
    restart: RestartSpec = RestartSpec()
    ready_timeout: Duration = Duration(10.0)
    stop_timeout: Duration = Duration(5.0)

    @property
    def kind(self) -> Literal["wasm", "native"]:
        return "native" if self.native is not None else "wasm"


class ReuseSpec(_Spec, frozen=True):
    """``reuse = { ... }`` of a component: keep warm instances between invocations.

    An instance serves at most ``max_invocations`` invocations, one at a time;
    at most ``pool_size`` instances wait warm between invocations, and one
    left unused for ``idle`` is closed.  See ``docs/manifest.md``.
    """

    max_invocations: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 128
    pool_size: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 8
    idle: Duration = Duration(30.0)


class ComponentSpec(_Spec, frozen=True):
    """A component instantiated fresh for every invocation (or reused: ``reuse``)."""

    name: Name
    wasm: Name | None = None
    python: Name | None = None
    world: Name = "command"
    concurrency: Annotated[int, msgspec.Meta(ge=1)] = 16
    queue: Annotated[int, msgspec.Meta(ge=0)] = 64
    timeout: Duration = Duration(30.0)
    max_memory: ByteSize | None = None
    env: dict[str, str] = {}
    dirs: tuple[DirSpec, ...] = ()
    reuse: ReuseSpec | None = None
    #: stream bytes cross the C API as latin-1 strings (docs/bytes-as-strings.md)
    fast_bytes: bool = False


class LinkSpec(_Spec, frozen=True):
    """``importer`` (a service or component) imports ``interface``; ``component`` exports it."""

    importer: Name
    interface: Name
    component: Name


class IngressRule(_Spec, frozen=True):
    """Expose virtual ``port`` of the workload on real ``host:host_port``."""

    host_port: Port
    port: Port
    host: str = "127.0.0.1"
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 512


class EgressRule(_Spec, frozen=True):
    """Let connections to ``dest:port`` leave the workload, to real address ``to`` (host:port)."""

    dest: Name
    port: Port
    to: str | None = None


class WorkloadSpec(_Spec, frozen=True):
    """One workload: its own virtual loopback network, services, components and rules."""

    name: Name
    names: dict[str, str] = {}
    services: tuple[ServiceSpec, ...] = ()
    components: tuple[ComponentSpec, ...] = ()
    links: tuple[LinkSpec, ...] = ()
    ingress: tuple[IngressRule, ...] = ()
    egress: tuple[EgressRule, ...] = ()

    def service(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise NotFound(f"workload {self.name!r} has no service {name!r}")

    def component(self, name: str) -> ComponentSpec:
        for spec in self.components:
            if spec.name == name:
                return spec
        raise NotFound(f"workload {self.name!r} has no component {name!r}")


class MetricsSpec(_Spec, frozen=True):
    """``[metrics]``: the metrics endpoint and health probes over HTTP (docs/metrics.md)."""

    listen: Name  # "host:port" on the host; port 0 picks a free one
    max_clients: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 16
    #: a request must arrive whole within this, and a kept-alive connection idles at most this
    timeout: Duration = Duration(10.0)
    #: largest request head (request line and headers) accepted
    max_request_size: ByteSize = ByteSize(8192)


class ManifestFile(_Spec, frozen=True):
    """The top level of a manifest file."""

    workloads: tuple[WorkloadSpec, ...] = ()
    python_path: tuple[str, ...] = ()
    grace: Duration = Duration(10.0)
    metrics: MetricsSpec | None = None
    #: component instances alive at once in the process (None: the engine's default)
    max_instances: InstanceCount | None = None


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """A loaded manifest: the file's content plus where it came from."""

    path: str
    workloads: tuple[WorkloadSpec, ...]
    python_path: tuple[str, ...] = ()
    grace: Duration = Duration(10.0)
    metrics: MetricsSpec | None = None
    max_instances: int | None = None
    source_map: SourceMap = msgspec.field(default_factory=SourceMap)

    @property
    def directory(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def workload(self, name: str) -> WorkloadSpec:
        for spec in self.workloads:
            if spec.name == name:
                return spec
        known = ", ".join(w.name for w in self.workloads)
        raise NotFound(f"no workload {name!r} in {self.path} (workloads: {known})")

    def to_dict(self) -> dict[str, Any]:
        """The content as TOML-shaped builtins (no None values; durations as "30s")."""
        doc = ManifestFile(
            workloads=self.workloads,
            python_path=self.python_path,
            grace=self.grace,
            metrics=self.metrics,
            max_instances=self.max_instances,
        )
        out = _drop_none(msgspec.to_builtins(doc, enc_hook=units.enc_hook))
        assert isinstance(out, dict)
        return out

    def issue(self, path: tuple[str | int, ...], message: str) -> ManifestIssue:
        """A ManifestIssue located at ``path`` in this manifest's file."""
        return ManifestIssue(self.path, self.source_map.line(path), format_path(path), message)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_drop_none(v) for v in value]
    return value


def resolve_path(path: str, base: str) -> str:
    if not path:
        return path
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _resolve_dirs(dirs: tuple[DirSpec, ...], base: str) -> tuple[DirSpec, ...]:
    return tuple(msgspec.structs.replace(d, host=resolve_path(d.host, base)) for d in dirs)


def resolve_workload(spec: WorkloadSpec, base: str) -> WorkloadSpec:
    services = tuple(
        msgspec.structs.replace(
            s,
            wasm=None if s.wasm is None else resolve_path(s.wasm, base),
            dirs=_resolve_dirs(s.dirs, base),
        )
        for s in spec.services
    )
    components = tuple(
        msgspec.structs.replace(
            c,
            wasm=None if c.wasm is None else resolve_path(c.wasm, base),
            python=None if c.python is None else resolve_path(c.python, base),
            dirs=_resolve_dirs(c.dirs, base),
        )
        for c in spec.components
    )
    return msgspec.structs.replace(spec, services=services, components=components)
