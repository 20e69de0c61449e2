"""Exceptions of the workload layer.

Hierarchy (``WorkloadError`` derives from ``fabric.errors.FabricError``;
``ManifestError`` is also a ``fabric.errors.UsageError``)::

    WorkloadError                  root of everything raised by fabric.workload
    ├── ManifestError              a manifest that cannot be loaded or is invalid (.issues)
    ├── NativeServiceError         a native service "module:Class" that cannot be loaded
    ├── ServiceFailed              a service gave up after too many restarts (.last_error)
    ├── UnfilledImports            an importer whose imports no link satisfies (.imports)
    ├── NotFound                   no such workload / component / service
    ├── Overloaded                 a component's concurrency limit and wait queue are full
    ├── ShuttingDown               the fabric is draining and takes no new invocations
    ├── WorkerLost                 the worker process running an invocation died under it
    ├── NoWorkerReady              fabric run --workers: no worker process can take an invocation
    ├── InvalidTransition          a lifecycle event that the state table does not allow
    ├── EgressResolveError         an egress target's host name does not resolve (at load)
    └── ControlError               the control endpoint (client side)
        ├── ControlUnavailable     nobody is listening on the control socket
        ├── ControlAccessError     a control directory, socket or peer of another user
        └── RemoteError            the server answered with an error (.kind, .message)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fabric.errors import FabricError, UsageError

__all__ = [
    "ControlError",
    "ControlUnavailable",
    "InvalidTransition",
    "ManifestError",
    "ManifestIssue",
    "NativeServiceError",
    "NoWorkerReady",
    "NotFound",
    "Overloaded",
    "RemoteError",
    "ServiceFailed",
    "ShuttingDown",
    "UnfilledImports",
    "WorkerLost",
    "WorkloadError",
]


class WorkloadError(FabricError):
    """Base class of every error raised by ``fabric.workload``."""


class ManifestIssue:
    """One problem in a manifest: file, line (1-based, or None), field path, message."""

    __slots__ = ("file", "line", "message", "path")

    def __init__(self, file: str, line: int | None, path: str, message: str) -> None:
        self.file = file
        self.line = line
        self.path = path
        self.message = message

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"

    def __repr__(self) -> str:
        return f"ManifestIssue({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ManifestIssue) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


class ManifestError(WorkloadError, UsageError):
    """A manifest that cannot be read, parsed, decoded or that fails validation.

    ``str(error)`` is one line per issue, each of the form
    ``<file>:<line>: <field path>: <message>``.
    """

    def __init__(self, issues: Iterable[ManifestIssue]) -> None:
        self.issues: tuple[ManifestIssue, ...] = tuple(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class NativeServiceError(WorkloadError):
    """A native service given as ``module:Class`` could not be imported or is not a service."""


class ServiceFailed(WorkloadError):
    """A service was marked failed (crash loop), keeping its last error."""

    def __init__(self, service: str, last_error: str | None, reason: str = "") -> None:
        self.service = service
        self.last_error = last_error
        self.reason = reason
        detail = f": {reason}" if reason else ""
        last = f" (last error: {last_error})" if last_error else ""
        super().__init__(f"service {service!r} failed{detail}{last}")


class UnfilledImports(WorkloadError):
    """A service or component imports interfaces that no link (and no host) provides."""

    def __init__(self, importer: str, imports: Sequence[str]) -> None:
        self.importer = importer
        self.imports = tuple(imports)
        listed = ", ".join(self.imports)
        super().__init__(
            f"{importer!r} imports interfaces that nothing provides: {listed} "
            f"(add a [[workloads.links]] entry naming a component that exports each one)"
        )


class NotFound(WorkloadError):
    """No workload, component or service of that name."""


class Overloaded(WorkloadError):
    """A component's concurrency limit is reached and its wait queue is full."""

    def __init__(self, component: str, limit: int, queue: int, running: int, waiting: int) -> None:
        self.component = component
        self.limit = limit
        self.queue = queue
        super().__init__(
            f"component {component!r} is overloaded: {running} invocations running and "
            f"{waiting} waiting (concurrency = {limit}, queue = {queue})"
        )


class ShuttingDown(WorkloadError):
    """The fabric is shutting down and accepts no new invocations."""


class WorkerLost(WorkloadError):
    """The worker process running an invocation died before answering (``fabric run
    --workers``): the invocation did not finish and may have run partly."""


class NoWorkerReady(WorkloadError):
    """Every worker process is starting, backing off after a crash, or failed."""


class InvalidTransition(WorkloadError):
    """A lifecycle event arrived in a state whose transition table does not allow it."""

    def __init__(self, name: str, state: str, event: str) -> None:
        self.name = name
        self.state = state
        self.event = event
        super().__init__(f"service {name!r}: event {event!r} is not allowed in state {state!r}")


class ControlError(WorkloadError):
    """An error talking to the control endpoint."""


class ControlUnavailable(ControlError):
    """Nothing is listening on the control socket."""


class RemoteError(ControlError):
    """The control endpoint answered a request with an error."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}")
