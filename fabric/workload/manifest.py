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
import re
import tomllib
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

import msgspec

from . import units
from ._decode_errors import format_path, translate
from ._toml_lines import SourceMap, scan_lines
from .errors import ManifestError, ManifestIssue, NotFound
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
    "RestartSpec",
    "ReuseSpec",
    "ServiceSpec",
    "WorkloadSpec",
    "load_manifest",
    "loads_manifest",
    "manifest_from_dict",
]

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Name = Annotated[str, msgspec.Meta(min_length=1)]


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


class ManifestFile(_Spec, frozen=True):
    """The top level of a manifest file."""

    workloads: tuple[WorkloadSpec, ...] = ()
    python_path: tuple[str, ...] = ()
    grace: Duration = Duration(10.0)


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """A loaded manifest: the file's content plus where it came from."""

    path: str
    workloads: tuple[WorkloadSpec, ...]
    python_path: tuple[str, ...] = ()
    grace: Duration = Duration(10.0)
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
        doc = ManifestFile(workloads=self.workloads, python_path=self.python_path, grace=self.grace)
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


def load_manifest(path: str | os.PathLike[str], *, check: bool = True) -> Manifest:
    """Read, decode and (unless ``check=False``) validate the manifest at ``path``."""
    file = os.fspath(path)
    try:
        data = FsPath(file).read_bytes()
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        issue = ManifestIssue(repr(file)[1:-1], None, "", f"cannot read manifest: {reason}")
        raise ManifestError([issue]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        issue = ManifestIssue(file, line, "", "invalid TOML: not UTF-8 text")
        raise ManifestError([issue]) from None
    base_dir = os.path.dirname(os.path.abspath(file))
    return loads_manifest(text, path=file, base_dir=base_dir, check=check)


_TOML_POSITION = re.compile(r"^(.*) \(at (?:line (\d+), column (\d+)|end of document)\)$", re.S)


def loads_manifest(
    text: str, *, path: str = "<string>", base_dir: str | None = None, check: bool = True
) -> Manifest:
    """Decode manifest ``text``; ``path`` is used in messages, ``base_dir`` for relative paths."""
    try:
        raw = tomllib.loads(text)
    except RecursionError:
        issue = ManifestIssue(path, None, "", f"invalid TOML: {_TOO_DEEP}")
        raise ManifestError([issue]) from None
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POSITION.match(str(exc))
        if match is None:  # pragma: no cover - tomllib always reports a position
            raise ManifestError([ManifestIssue(path, None, "", f"invalid TOML: {exc}")]) from None
        message, line, column = match.groups()
        if line is None:
            where = max(1, len(text.rstrip("\r\n").splitlines()))
            at = "at end of document"
        else:
            where, at = int(line), f"at column {column}"
        issue = ManifestIssue(path, where, "", f"invalid TOML: {message} ({at})")
        raise ManifestError([issue]) from None
    try:
        lines = scan_lines(text)
    except RecursionError:
        lines = SourceMap()
    return manifest_from_dict(raw, path=path, base_dir=base_dir, source_map=lines, check=check)


MAX_DEPTH = 64
_TOO_DEEP = f"arrays or tables nested more than {MAX_DEPTH} levels deep"


def _too_deep(value: Any) -> tuple[str | int, ...] | None:
    """The path of the first value nested deeper than ``MAX_DEPTH``, if any (no recursion)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, where = stack.pop()
        if len(where) > MAX_DEPTH:
            return where
        if isinstance(item, dict):
            stack.extend((v, (*where, k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, (*where, i)) for i, v in enumerate(item))
    return None


def manifest_from_dict(
    raw: dict[str, Any],
    *,
    path: str = "<string>",
    base_dir: str | None = None,
    source_map: SourceMap | None = None,
    check: bool = True,
) -> Manifest:
    """Decode already-parsed TOML data (e.g. ``Manifest.to_dict()``)."""
    lines = source_map if source_map is not None else SourceMap()
    deep = _too_deep(raw)
    if deep is not None:
        where = deep[: MAX_DEPTH // 4]
        issue = ManifestIssue(path, lines.line(where), format_path(where), _TOO_DEEP)
        raise ManifestError([issue])
    try:
        doc = msgspec.convert(raw, ManifestFile, dec_hook=units.dec_hook)
    except msgspec.ValidationError as exc:
        field_path, message = translate(exc, raw, ManifestFile)
        issue = ManifestIssue(path, lines.line(field_path), format_path(field_path), message)
        raise ManifestError([issue]) from None
    base = base_dir if base_dir is not None else os.getcwd()
    manifest = Manifest(
        path=path,
        workloads=tuple(_resolve_workload(w, base) for w in doc.workloads),
        python_path=tuple(_resolve(p, base) for p in doc.python_path),
        grace=doc.grace,
        source_map=lines,
    )
    if check:
        from .checks import validate

        validate(manifest)
    return manifest


def _resolve(path: str, base: str) -> str:
    if not path:
        return path
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _resolve_dirs(dirs: tuple[DirSpec, ...], base: str) -> tuple[DirSpec, ...]:
    return tuple(msgspec.structs.replace(d, host=_resolve(d.host, base)) for d in dirs)


def _resolve_workload(spec: WorkloadSpec, base: str) -> WorkloadSpec:
    services = tuple(
        msgspec.structs.replace(
            s,
            wasm=None if s.wasm is None else _resolve(s.wasm, base),
            dirs=_resolve_dirs(s.dirs, base),
        )
        for s in spec.services
    )
    components = tuple(
        msgspec.structs.replace(
            c,
            wasm=None if c.wasm is None else _resolve(c.wasm, base),
            python=None if c.python is None else _resolve(c.python, base),
            dirs=_resolve_dirs(c.dirs, base),
        )
        for c in spec.components
    )
    return msgspec.structs.replace(spec, services=services, components=components)
