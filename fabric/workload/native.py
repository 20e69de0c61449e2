"""Native Python services: the public API a service class is written against.

A native service is named in the manifest as ``native = "package.module:Class"``.
fabric imports the module (after putting the manifest's ``python_path`` in
front of ``sys.path``), constructs ``Class(config)`` with the service's
``config`` table (a fresh deep copy for every start) and awaits
``serve(ctx)``::

    class EchoService:
        def __init__(self, config: dict[str, Any]) -> None:
            self.port = int(config.get("port", 8080))

        async def serve(self, ctx: ServiceContext) -> None:
            await ctx.network.start_server(self.handle, self.port)
            await asyncio.Event().wait()   # serve until cancelled

A class may declare ``config_type`` (a msgspec Struct type): manifest
validation with native classes imported (``fabric validate``, ``fabric run``)
then checks the ``config`` table against it, with file/line/field messages.

``serve`` runs for as long as the service runs: returning is an exit, raising
is a crash (both restart per the restart policy); stopping cancels it.  When
an instance ends, every server it started and every connection it accepted
or opened through ``ctx.network`` is closed (connection handlers still running
are cancelled), so the next instance can bind the same ports.  The service
is *ready* once it listens on all its declared ``ports``.

``ctx.network`` is the workload's virtual loopback network (the same one wasm
guests see); ``ctx.invoke(component, export, args)`` runs a component of the
same workload; ``ctx.publish_stats(fn)`` makes ``fn()`` (a msgspec Struct or a
dict) part of ``fabric status`` (and of the metrics endpoint, as untyped
``fabric_service_stat`` values, unless the class offers ``metrics()``);
``ctx.publish_handle(obj)`` offers ``obj`` to the workload's runtime
in-process while the instance runs (how the dbpool service serves the typed
``fabric:dbpool/sql`` import); ``ctx.worker`` says which worker process of
``fabric run --workers N`` runs this instance (a ``WorkerSlot``: ``index`` of
``count``; ``0/1`` for a plain ``fabric run``).

With several workers every service runs once per worker. A class whose
instances hold something outside the process that must not be multiplied
declares a ``for_worker(config, slot)`` classmethod returning each worker's
``config`` table (``fabric.workload.shares``; dbpool splits its pools' sizes).

A service class may offer a guest SDK: ``guest_paths`` (a class attribute, a
sequence of directories of pure-Python modules) are put on the module path of
every component of the workload built from Python source (``python = "dir"``),
so those components can ``import`` the service's client.  Likewise
``host_imports`` (a class attribute of `HostImport`s) are interfaces the service
serves in-process: every component of the workload that imports one gets it
defined in its linker, built from the handles the workload's services publish
(``ctx.publish_handle``).

A service instance may offer typed metrics for the metrics endpoint
(``[metrics]``, docs/metrics.md): a ``metrics()`` method returning metric
families as plain data, each ``{"name", "kind": "counter" | "gauge", "help",
"samples": [{"value", "labels": {...}}]}`` (or `MetricFamily` Structs); they
are read at scrape time, so nothing is counted twice on the service's hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import inspect
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import msgspec

from fabric.engine import HostInterface

from .errors import NativeServiceError, WorkloadError
from .shares import WorkerSlot
from .status import MetricFamily

__all__ = [
    "ConnectionHandler",
    "HostImport",
    "Invoker",
    "NativeRunner",
    "NativeService",
    "Network",
    "ServerLike",
    "ServiceContext",
    "StreamReaderLike",
    "StreamWriterLike",
    "load_service_class",
    "offered_guest_paths",
    "offered_host_imports",
    "parse_native_spec",
]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
NATIVE_SPEC = re.compile(rf"({_IDENT}(?:\.{_IDENT})*):({_IDENT}(?:\.{_IDENT})*)")
NATIVE_HINT = '"module:Class" like "services.dbpool.service:DbPoolService"'


class StreamReaderLike(Protocol):
    """The reading half of a connection (``asyncio.StreamReader`` fits)."""

    async def read(self, n: int = -1) -> bytes: ...
    async def readexactly(self, n: int) -> bytes: ...
    async def readline(self) -> bytes: ...
    def at_eof(self) -> bool: ...


class StreamWriterLike(Protocol):
    """The writing half of a connection (``asyncio.StreamWriter`` fits)."""

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def write_eof(self) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...
    async def wait_closed(self) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


class ServerLike(Protocol):
    """What ``start_server`` returns (``asyncio.Server`` fits)."""

    def close(self) -> None: ...
    async def wait_closed(self) -> None: ...


ConnectionHandler = Callable[[StreamReaderLike, StreamWriterLike], Awaitable[None]]


class Network(Protocol):
    """A workload's virtual loopback network, asyncio-shaped (provided by the runtime)."""

    async def start_server(
        self, handler: ConnectionHandler, port: int, *, host: str = "127.0.0.1"
    ) -> ServerLike: ...

    async def open_connection(
        self, port: int, *, host: str = "127.0.0.1"
    ) -> tuple[StreamReaderLike, StreamWriterLike]: ...


Invoker = Callable[[str, str | None, Sequence[Any]], Awaitable[Any]]
"""``invoker(component, export, args)``: run a component of the same workload."""


class ServiceContext:
    """What a native service gets: names, network, invoke, stats, logger, env."""

    def __init__(
        self,
        *,
        workload: str,
        service: str,
        network: Network,
        invoker: Invoker | None = None,
        env: Mapping[str, str] | None = None,
        logger: logging.Logger | None = None,
        handles: dict[str, Any] | None = None,
        worker: WorkerSlot | None = None,
    ) -> None:
        self.workload = workload
        self.service = service
        self.network = network
        #: which worker process runs this instance (``fabric run --workers N``)
        self.worker = worker if worker is not None else WorkerSlot()
        self.env: Mapping[str, str] = dict(env or {})
        self.logger = logger or logging.getLogger(f"fabric.service.{workload}.{service}")
        self._invoker = invoker
        self._stats: Callable[[], Any] | None = None
        self._handles = handles if handles is not None else {}
        self.handle: Any = None

    def publish_handle(self, handle: Any) -> None:
        """Offer ``handle`` to the workload's runtime in-process (the dbpool service
        serves the typed ``fabric:dbpool/sql`` import this way); withdrawn when
        the instance ends."""
        self.handle = handle
        self._handles[self.service] = handle

    def withdraw_handle(self) -> None:
        if self.handle is not None and self._handles.get(self.service) is self.handle:
            del self._handles[self.service]
        self.handle = None

    async def invoke(
        self, component: str, export: str | None = None, args: Sequence[Any] = ()
    ) -> Any:
        """Invoke ``export`` (default: the component's only export) of ``component``."""
        if self._invoker is None:
            raise WorkloadError(
                f"service {self.service!r} of workload {self.workload!r} has no invoker"
            )
        return await self._invoker(component, export, list(args))

    def publish_stats(self, source: Callable[[], Any]) -> None:
        """Show ``source()`` (a msgspec Struct, dict or other builtins) in ``fabric status``."""
        self._stats = source

    def stats(self) -> Any:
        """The published stats as builtins, ``None`` if nothing is published."""
        if self._stats is None:
            return None
        try:
            return msgspec.to_builtins(self._stats())
        except Exception as exc:  # a broken stats callback must not break status
            return {"error": f"{type(exc).__name__}: {exc}"}

    def __repr__(self) -> str:
        return f"<ServiceContext {self.workload}/{self.service}>"


class NativeService(Protocol):
    """The shape of a native service class."""

    def __init__(self, config: dict[str, Any]) -> None: ...
    async def serve(self, ctx: ServiceContext) -> None: ...


def parse_native_spec(spec: str) -> tuple[str, str]:
    """``"pkg.mod:Class"`` → ``("pkg.mod", "Class")``; ``ValueError`` if malformed."""
    match = NATIVE_SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(f"expected {NATIVE_HINT}")
    return match.group(1), match.group(2)


def load_service_class(spec: str, python_path: Sequence[str] = ()) -> type[NativeService]:
    """Import and return the class named by ``spec``; ``NativeServiceError`` explains failures."""
    try:
        module_name, qualname = parse_native_spec(spec)
    except ValueError as exc:
        raise NativeServiceError(f"native service {spec!r}: {exc}") from None
    for entry in reversed(python_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise NativeServiceError(
            f"native service {spec!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    for attr in qualname.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise NativeServiceError(
                f"native service {spec!r}: {module_name!r} has no attribute {qualname!r}"
            ) from None
    if not isinstance(obj, type):
        raise NativeServiceError(f"native service {spec!r}: {qualname!r} is not a class")
    if not inspect.iscoroutinefunction(getattr(obj, "serve", None)):
        raise NativeServiceError(
            f"native service {spec!r}: {qualname} has no `async def serve(self, ctx)` method"
        )
    return cast("type[NativeService]", obj)


class HostImport(Protocol):
    """An interface a native service serves to the components of its workload."""

    #: the interface name components import, unversioned (``fabric:dbpool/sql``)
    interface: str

    def __call__(self, handles: Callable[[], Iterable[Any]], name: str) -> HostInterface:
        """The host side under the versioned ``name`` the component imports;
        ``handles()`` gives the published handles of the workload's services."""
        ...


def _offered(specs: Sequence[str], python_path: Sequence[str], attribute: str) -> list[Any]:
    """The entries of class attribute ``attribute`` of the native service classes
    named by ``specs``, in order, each once."""
    offered: list[Any] = []
    for spec in specs:
        for entry in getattr(load_service_class(spec, python_path), attribute, ()):
            if entry not in offered:
                offered.append(entry)
    return offered


def offered_host_imports(specs: Sequence[str], python_path: Sequence[str] = ()) -> list[HostImport]:
    """The ``host_imports`` the native service classes named by ``specs`` offer."""
    return _offered(specs, python_path, "host_imports")


def offered_guest_paths(specs: Sequence[str], python_path: Sequence[str] = ()) -> list[Path]:
    """The ``guest_paths`` the native service classes named by ``specs`` offer, in order."""
    return [Path(entry) for entry in _offered(specs, python_path, "guest_paths")]


class _TrackedNetwork:
    """Wraps a Network for one service instance, remembering what to close when it ends."""

    def __init__(self, network: Network, logger: logging.Logger) -> None:
        self._network = network
        self._logger = logger
        self._servers: list[ServerLike] = []
        self._writers: set[StreamWriterLike] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self.listening: set[int] = set()

    async def start_server(
        self, handler: ConnectionHandler, port: int, *, host: str = "127.0.0.1"
    ) -> ServerLike:
        async def tracked(reader: StreamReaderLike, writer: StreamWriterLike) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._handlers.add(task)
            self._writers.add(writer)
            try:
                await handler(reader, writer)
            except asyncio.CancelledError:
                pass  # the instance ended (aclose); end the connection task normally
            except Exception:
                self._logger.exception("connection handler on port %d failed", port)
            finally:
                self._writers.discard(writer)
                if task is not None:
                    self._handlers.discard(task)
                writer.close()

        server = await self._network.start_server(tracked, port, host=host)
        self._servers.append(server)
        self.listening.add(port)
        return server

    async def open_connection(
        self, port: int, *, host: str = "127.0.0.1"
    ) -> tuple[StreamReaderLike, StreamWriterLike]:
        reader, writer = await self._network.open_connection(port, host=host)
        self._writers.add(writer)
        return reader, writer

    async def aclose(self, wait: float = 1.0) -> None:
        self.listening.clear()
        servers, self._servers = self._servers, []
        writers, self._writers = list(self._writers), set()
        handlers, self._handlers = set(self._handlers), set()
        for server in servers:
            server.close()
        for writer in writers:
            writer.close()
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=wait)
        for server in servers:
            with contextlib.suppress(Exception, TimeoutError):
                await asyncio.wait_for(server.wait_closed(), wait)


class NativeRunner:
    """One instance of a native service, runnable under the ``Supervisor``.

    Build a new runner for every (re)start: ``lambda: NativeRunner(cls, ...)``.
    """

    def __init__(
        self,
        cls: type[NativeService],
        *,
        config: Mapping[str, Any],
        workload: str,
        service: str,
        network: Network,
        ports: Sequence[int] = (),
        invoker: Invoker | None = None,
        env: Mapping[str, str] | None = None,
        logger: logging.Logger | None = None,
        handles: dict[str, Any] | None = None,
        worker: WorkerSlot | None = None,
    ) -> None:
        self._cls = cls
        self._config = config
        self._ports = tuple(ports)
        self._instance: NativeService | None = None
        self.logger = logger or logging.getLogger(f"fabric.service.{workload}.{service}")
        self._network = _TrackedNetwork(network, self.logger)
        self.context = ServiceContext(
            workload=workload,
            service=service,
            network=self._network,
            invoker=invoker,
            env=env,
            logger=self.logger,
            handles=handles,
            worker=worker,
        )

    async def run(self) -> None:
        try:
            instance = self._instance = self._cls(copy.deepcopy(dict(self._config)))
            await instance.serve(self.context)
        finally:
            self._instance = None
            self.context.withdraw_handle()
            await self._network.aclose()

    def is_ready(self) -> bool:
        return all(port in self._network.listening for port in self._ports)

    def stats(self) -> Any:
        return self.context.stats()

    def metrics(self) -> tuple[MetricFamily, ...]:
        """What the service instance's optional ``metrics()`` method offers (none without one)."""
        offered = getattr(self._instance, "metrics", None)
        if offered is None:
            return ()
        return msgspec.convert(list(offered()), tuple[MetricFamily, ...])

    def __repr__(self) -> str:
        name = self._cls.__name__
        listening = sorted(self._network.listening)
        return f"<NativeRunner {name} ports={list(self._ports)} listening={listening}>"
