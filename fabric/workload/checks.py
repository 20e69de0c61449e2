"""Semantic checks of a decoded manifest (what msgspec's types cannot say).

``validate(manifest)`` raises one ``ManifestError`` listing every problem, each
located at its field path and line.  ``check_manifest`` returns the list.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from . import units
from ._decode_errors import format_path as _fmt
from ._decode_errors import translate
from ._toml_lines import Path
from .errors import ManifestError, ManifestIssue, NativeServiceError
from .native import NATIVE_HINT, load_service_class, parse_native_spec
from .shares import WorkerSlot, config_for_worker
from .units import format_duration, format_size

if TYPE_CHECKING:
    from .manifest import (
        DirSpec,
        Manifest,
        MetricsSpec,
        RestartSpec,
        ServiceSpec,
        WorkloadSpec,
    )

__all__ = [
    "MAX_CONCURRENCY",
    "MAX_DURATION",
    "MAX_MEMORY",
    "MAX_QUEUE",
    "check_manifest",
    "file_problem",
    "nul_problem",
    "split_listen",
    "validate",
]

MAX_MEMORY = 64 * 2**30  # per guest instance; a wasm32 memory is at most 4GiB
MAX_CONCURRENCY = 10_000
MAX_QUEUE = 1_000_000
MAX_DURATION = 366 * 86400.0  # timeouts, backoffs, windows, grace

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
NAME_HINT = 'a name of letters, digits, "_", "-" and "." that starts with a letter or digit'
MAX_REUSE_IDLE = 86400.0  # reuse.idle: at most a day
MAX_REQUEST_SIZE = 1024 * 1024  # metrics.max_request_size: a request head of at most 1MiB
HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?"
)
_WIT_WORD = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
INTERFACE = re.compile(
    rf"{_WIT_WORD}(?::{_WIT_WORD})+/{_WIT_WORD}(?:@\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)?"
)
INTERFACE_HINT = 'an interface like "fabric:guests/job" or "wasi:http/incoming-handler@0.2.0"'

Issue = tuple[Path, str]


def validate(
    manifest: Manifest, *, check_files: bool = False, import_native: bool = False, workers: int = 1
) -> None:
    """Raise ``ManifestError`` with every problem found, or return None.

    ``check_files``: wasm files, preopened host directories and ``python_path``
    entries must exist.  ``import_native``: native service classes must import.
    ``workers``: the manifest runs in that many worker processes (``fabric run
    --workers``); with ``import_native`` each native service class's
    ``for_worker`` hook must accept every worker's share of its config.
    """
    issues = check_manifest(
        manifest, check_files=check_files, import_native=import_native, workers=workers
    )
    if issues:
        raise ManifestError(issues)


def check_manifest(
    manifest: Manifest, *, check_files: bool = False, import_native: bool = False, workers: int = 1
) -> list[ManifestIssue]:
    """Every semantic problem in ``manifest``, in file order."""
    found = list(_check(manifest, check_files=check_files, import_native=import_native))
    if import_native and workers > 1:
        found.extend(_replicas(manifest, workers))
    issues = [manifest.issue(path, message) for path, message in found]
    issues.sort(key=lambda issue: issue.line or 0)
    return issues


def _check(manifest: Manifest, *, check_files: bool, import_native: bool) -> Iterator[Issue]:
    if not manifest.workloads:
        yield ("workloads",), "no workloads defined (add a [[workloads]] table with a name)"
    seen_workloads: dict[str, Path] = {}
    published: dict[int, list[tuple[str, str, Path]]] = {}  # host_port -> (host, workload, path)
    for w, workload in enumerate(manifest.workloads):
        base: Path = ("workloads", w)
        yield from _name(workload.name, (*base, "name"))
        if workload.name in seen_workloads:
            first = _fmt(seen_workloads[workload.name])
            yield (*base, "name"), f'duplicate workload name "{workload.name}" (also {first})'
        else:
            seen_workloads[workload.name] = base
        yield from _workload(manifest, workload, base, check_files, import_native)
        for i, rule in enumerate(workload.ingress):
            path = (*base, "ingress", i)
            for host, other, other_path in published.get(rule.host_port, []):
                if host == rule.host or _wildcard(host) or _wildcard(rule.host):
                    message = (
                        f"host port {rule.host_port} is already published by workload "
                        f'"{other}" ({_fmt(other_path)})'
                    )
                    yield (*path, "host_port"), message
                    break
            published.setdefault(rule.host_port, []).append((rule.host, workload.name, path))
    yield from _duration(manifest.grace, ("grace",))
    if manifest.metrics is not None:
        yield from _metrics(manifest.metrics, published)
    for p, entry in enumerate(manifest.python_path):
        if check_files and not os.path.isdir(entry):
            yield ("python_path", p), f"directory {entry} does not exist"


def _replicas(manifest: Manifest, workers: int) -> Iterator[Issue]:
    """What a native service's ``for_worker`` hook refuses for ``workers`` workers."""
    for w, workload in enumerate(manifest.workloads):
        for s, service in enumerate(workload.services):
            if service.native is None:
                continue
            try:
                cls = load_service_class(service.native, manifest.python_path)
            except NativeServiceError:
                continue  # reported by the service's own checks
            for index in range(workers):
                try:
                    config_for_worker(cls, service.config, WorkerSlot(index, workers))
                except (ValueError, TypeError, msgspec.ValidationError) as exc:
                    yield (
                        ("workloads", w, "services", s, "config"),
                        f"cannot run in {workers} workers (fabric run --workers): {exc}",
                    )
                    break


def split_listen(text: str) -> tuple[str, int] | None:
    """``"127.0.0.1:9464"`` or ``"[::1]:9464"`` -> (host, port); None if malformed.

    The host is an IP address; port 0 asks for a free port."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", text)
    if match is None:
        return None
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535 or not _is_ip(host):
        return None
    return host, port


def _metrics(
    metrics: MetricsSpec, published: dict[int, list[tuple[str, str, Path]]]
) -> Iterator[Issue]:
    base: Path = ("metrics",)
    listen = split_listen(metrics.listen)
    if listen is None:
        yield (
            (*base, "listen"),
            f'expected "host:port" with an IP address, like "127.0.0.1:9464" or '
            f'"0.0.0.0:9464", got "{metrics.listen}"',
        )
    else:
        host, port = listen
        for other_host, workload, path in published.get(port, []) if port else []:
            if other_host == host or _wildcard(other_host) or _wildcard(host):
                yield (
                    (*base, "listen"),
                    f'host port {port} is already published by workload "{workload}" '
                    f"({_fmt(path)})",
                )
                break
    if metrics.timeout <= 0:
        yield (*base, "timeout"), "expected a positive duration, got 0s"
    yield from _duration(metrics.timeout, (*base, "timeout"))
    if not 256 <= metrics.max_request_size <= MAX_REQUEST_SIZE:
        yield (
            (*base, "max_request_size"),
            f"expected from 256B to {format_size(MAX_REQUEST_SIZE)}, "
            f"got {format_size(metrics.max_request_size)}",
        )


def _wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def _name(name: str, path: Path) -> Iterator[Issue]:
    if not NAME.fullmatch(name):
        yield path, f'expected {NAME_HINT}, got "{name}"'


def _workload(
    manifest: Manifest, workload: WorkloadSpec, base: Path, check_files: bool, import_native: bool
) -> Iterator[Issue]:
    for host, address in workload.names.items():
        path = (*base, "names", host)
        if not HOSTNAME.fullmatch(host):
            yield path, f'"{host}" is not a valid host name'
        if not _is_ip(address):
            yield path, f'expected an IP address like "127.0.0.1", got "{address}"'

    members: dict[str, Path] = {}  # service and component names share one namespace
    ports: dict[int, tuple[str, Path]] = {}
    for s, service in enumerate(workload.services):
        path = (*base, "services", s)
        yield from _member(service.name, path, members)
        yield from _service(manifest, service, path, ports, check_files, import_native)
    for c, component in enumerate(workload.components):
        path = (*base, "components", c)
        yield from _member(component.name, path, members)
        if component.timeout <= 0:
            yield (*path, "timeout"), "expected a positive duration, got 0s"
        yield from _duration(component.timeout, (*path, "timeout"))
        yield from _memory(component.max_memory, (*path, "max_memory"))
        yield from _at_most(component.concurrency, MAX_CONCURRENCY, (*path, "concurrency"))
        yield from _at_most(component.queue, MAX_QUEUE, (*path, "queue"))
        yield from _env(component.env, (*path, "env"))
        if component.reuse is not None:
            if component.reuse.idle <= 0:
                yield (*path, "reuse", "idle"), "expected a positive duration, got 0s"
            elif component.reuse.idle > MAX_REUSE_IDLE:
                yield (
                    (*path, "reuse", "idle"),
                    f"expected at most 1d, got {format_duration(component.reuse.idle)}",
                )
        if component.wasm is not None and component.python is not None:
            yield (*path, "python"), 'give either "wasm" or "python", not both'
        elif component.wasm is None and component.python is None:
            yield path, 'missing "wasm" (a component file) or "python" (a guest source directory)'
        if check_files and component.wasm is not None:
            problem = file_problem(component.wasm)
            if problem:
                yield (*path, "wasm"), problem
        if (
            check_files
            and component.python is not None
            and not os.path.isfile(os.path.join(component.python, "app.py"))
        ):
            yield (*path, "python"), f"no app.py in {component.python}"
        yield from _dirs(component.dirs, path, check_files)

    yield from _links(workload, base)

    declared = sorted(ports)
    for i, rule in enumerate(workload.ingress):
        path = (*base, "ingress", i)
        if not _is_ip(rule.host):
            yield (*path, "host"), f'expected an IP address like "127.0.0.1", got "{rule.host}"'
        if rule.port not in ports:
            listed = ", ".join(map(str, declared)) or "none"
            yield (
                (*path, "port"),
                (
                    f'no service of workload "{workload.name}" declares port {rule.port} '
                    f"(declared: {listed})"
                ),
            )
    seen_egress: dict[tuple[str, int], Path] = {}
    for i, egress in enumerate(workload.egress):
        path = (*base, "egress", i)
        if not (HOSTNAME.fullmatch(egress.dest) or _is_ip(egress.dest)):
            yield (*path, "dest"), f'expected a host name or IP address, got "{egress.dest}"'
        if egress.to is not None and _split_host_port(egress.to) is None:
            yield (*path, "to"), f'expected "host:port" like "127.0.0.1:5432", got "{egress.to}"'
        key = (egress.dest.lower(), egress.port)
        if key in seen_egress:
            also = _fmt(seen_egress[key])
            yield path, f"duplicate egress rule for {egress.dest}:{egress.port} (also {also})"
        else:
            seen_egress[key] = path


def _member(name: str, path: Path, members: dict[str, Path]) -> Iterator[Issue]:
    yield from _name(name, (*path, "name"))
    if name in members:
        yield (*path, "name"), f'duplicate name "{name}" (also {_fmt(members[name])})'
    else:
        members[name] = path


def _service(
    manifest: Manifest,
    service: ServiceSpec,
    path: Path,
    ports: dict[int, tuple[str, Path]],
    check_files: bool,
    import_native: bool,
) -> Iterator[Issue]:
    if service.wasm is not None and service.native is not None:
        yield (*path, "native"), 'give either "wasm" or "native", not both'
    elif service.wasm is None and service.native is None:
        yield path, 'missing "wasm" (a component path) or "native" (a Python "module:Class")'
    if service.native is not None:
        try:
            parse_native_spec(service.native)
        except ValueError:
            yield (*path, "native"), f'expected {NATIVE_HINT}, got "{service.native}"'
        else:
            if import_native:
                try:
                    cls = load_service_class(service.native, manifest.python_path)
                except NativeServiceError as exc:
                    yield (*path, "native"), str(exc)
                else:
                    yield from _native_config(cls, service.config, (*path, "config"))
        for key, present in (
            ("args", bool(service.args)),
            ("dirs", bool(service.dirs)),
            ("max_memory", service.max_memory is not None),
        ):
            if present:
                yield (
                    (*path, key),
                    (f'only wasm services take "{key}" (native services get "config")'),
                )
        if service.fast_bytes:
            yield (
                (*path, "fast_bytes"),
                'only wasm services take "fast_bytes" (it rewrites how a wasm guest '
                "moves stream bytes)",
            )
    elif service.config:
        yield (
            (*path, "config"),
            ('only native services take "config" (wasm services get "args" and "env")'),
        )
    if service.wasm is not None and check_files:
        problem = file_problem(service.wasm)
        if problem:
            yield (*path, "wasm"), problem
    yield from _env(service.env, (*path, "env"))
    yield from _args(service.args, (*path, "args"))
    yield from _memory(service.max_memory, (*path, "max_memory"))
    for key in ("ready_timeout", "stop_timeout"):
        yield from _duration(getattr(service, key), (*path, key))

    for p, port in enumerate(service.ports):
        if port in ports:
            owner, owner_path = ports[port]
            if owner_path[: len(path)] == path:
                yield (*path, "ports", p), f"port {port} is listed twice"
            else:
                yield (
                    (*path, "ports", p),
                    (f'port {port} is already declared by service "{owner}" ({_fmt(owner_path)})'),
                )
        else:
            ports[port] = (service.name, (*path, "ports", p))
    yield from _restart(service.restart, (*path, "restart"))
    if service.ready_timeout <= 0:
        yield (*path, "ready_timeout"), "expected a positive duration, got 0s"
    yield from _dirs(service.dirs, path, check_files)


def _restart(restart: RestartSpec, path: Path) -> Iterator[Issue]:
    for key in ("initial_backoff", "window"):
        if getattr(restart, key) <= 0:
            yield (*path, key), "expected a positive duration, got 0s"
    for key in ("initial_backoff", "max_backoff", "window", "reset_after"):
        yield from _duration(getattr(restart, key), (*path, key))
    if restart.max_backoff < restart.initial_backoff:
        yield (
            (*path, "max_backoff"),
            (
                f"must be at least initial_backoff ({format_duration(restart.initial_backoff)}), "
                f"got {format_duration(restart.max_backoff)}"
            ),
        )


def _native_config(cls: type, config: Mapping[str, Any], path: Path) -> Iterator[Issue]:
    """Check ``config`` against the msgspec type a native service class declares as
    ``config_type`` (services without one take any table)."""
    infinite = list(_finite(config, path))
    yield from infinite
    config_type = getattr(cls, "config_type", None)
    if config_type is None or infinite:
        return
    try:
        msgspec.convert(dict(config), config_type, dec_hook=units.dec_hook)
    except msgspec.ValidationError as exc:
        where, message = translate(exc, dict(config), config_type)
        yield (*path, *where), message
    except RecursionError:
        yield path, "nested too deeply"


def _finite(value: Any, path: Path) -> Iterator[Issue]:
    """Every ``nan`` or ``inf`` in a native service's config (never a usable setting)."""
    stack: list[tuple[Any, Path]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            yield where, f"expected a finite number, got {item}"
        elif isinstance(item, Mapping):
            stack.extend((v, (*where, k)) for k, v in reversed(list(item.items())))
        elif isinstance(item, list | tuple):
            stack.extend((v, (*where, i)) for i, v in reversed(list(enumerate(item))))


def file_problem(path: str) -> str | None:
    """Why ``path`` cannot be a component file, or None if it is a regular file."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return f"file {path} does not exist"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if stat.S_ISDIR(info.st_mode):
        return f"{path} is a directory, not a component file"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file (a device, pipe or socket), not a component file"
    return None


def nul_problem(text: str) -> str | None:
    """A message if ``text`` holds a NUL byte (impossible in an argument or variable)."""
    if "\0" in text:
        return f"contains a NUL byte: {text!r}"
    return None


def _env(env: Mapping[str, str], path: Path) -> Iterator[Issue]:
    for key, value in env.items():
        if not key or "=" in key:
            yield (*path, key), 'expected a variable name without "="'
        problem = nul_problem(key) or nul_problem(value)
        if problem:
            yield (*path, key), problem


def _args(args: Sequence[str], path: Path) -> Iterator[Issue]:
    for i, arg in enumerate(args):
        problem = nul_problem(arg)
        if problem:
            yield (*path, i), problem


def _duration(value: float, path: Path) -> Iterator[Issue]:
    if value > MAX_DURATION:
        limit = format_duration(MAX_DURATION)
        yield path, f"expected at most {limit}, got {format_duration(value)}"


def _memory(value: int | None, path: Path) -> Iterator[Issue]:
    if value is not None and value > MAX_MEMORY:
        yield path, f"expected at most {format_size(MAX_MEMORY)}, got {format_size(value)}"


def _at_most(value: int, limit: int, path: Path) -> Iterator[Issue]:
    if value > limit:
        yield path, f"expected at most {limit}, got {value}"


def _dirs(dirs: tuple[DirSpec, ...], path: Path, check_files: bool) -> Iterator[Issue]:
    guests: dict[str, Path] = {}
    for d, spec in enumerate(dirs):
        at = (*path, "dirs", d)
        guest = spec.guest.rstrip("/") or "/"
        if not spec.guest.startswith("/"):
            yield (*at, "guest"), f'expected an absolute path like "/data", got "{spec.guest}"'
        elif guest in guests:
            yield (*at, "guest"), f'guest path "{guest}" is already mapped ({_fmt(guests[guest])})'
        else:
            guests[guest] = at
        if check_files and not os.path.isdir(spec.host):
            yield (*at, "host"), f"directory {spec.host} does not exist"


def _links(workload: WorkloadSpec, base: Path) -> Iterator[Issue]:
    services = {s.name for s in workload.services}
    components = {c.name for c in workload.components}
    seen: dict[tuple[str, str], Path] = {}
    edges: dict[str, set[str]] = {}  # component importer -> exporting components
    for i, link in enumerate(workload.links):
        path = (*base, "links", i)
        known = link.importer in services or link.importer in components
        if not known:
            yield (
                (*path, "importer"),
                (f'no service or component named "{link.importer}" in workload "{workload.name}"'),
            )
        if not INTERFACE.fullmatch(link.interface):
            yield (*path, "interface"), f'expected {INTERFACE_HINT}, got "{link.interface}"'
        if link.component in services:
            yield (
                (*path, "component"),
                (
                    f'"{link.component}" is a service; a link must name a component '
                    "(instantiated per call)"
                ),
            )
        elif link.component not in components:
            listed = ", ".join(sorted(components)) or "none"
            yield (
                (*path, "component"),
                (
                    f'no component named "{link.component}" in workload "{workload.name}" '
                    f"(components: {listed})"
                ),
            )
        elif link.component == link.importer:
            yield (*path, "component"), f'"{link.component}" cannot satisfy its own import'
        key = (link.importer, link.interface)
        if key in seen:
            yield (
                (*path, "interface"),
                (f'"{link.importer}" already imports "{link.interface}" ({_fmt(seen[key])})'),
            )
        else:
            seen[key] = path
        if link.importer in components and link.component in components:
            edges.setdefault(link.importer, set()).add(link.component)
            cycle = _find_cycle(edges, link.importer)
            if cycle:
                yield (
                    path,
                    (
                        "links form a cycle: "
                        + " -> ".join(cycle)
                        + " (every call would instantiate the next one forever)"
                    ),
                )
                edges[link.importer].discard(link.component)


def _find_cycle(edges: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start through ``edges``, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    visited: set[str] = set()
    while stack:
        node, trail = stack.pop()
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                return [*trail, start]
            if nxt not in visited:
                visited.add(nxt)
                stack.append((nxt, [*trail, nxt]))
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _split_host_port(text: str) -> tuple[str, int] | None:
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    if match is None:
        return None
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        return None
    return host, port
