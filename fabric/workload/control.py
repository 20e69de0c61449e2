"""The control endpoint: a Unix socket speaking newline-delimited msgspec JSON.

Each request and each response is one JSON object on one line, tagged by its
``"type"``::

    → {"type":"status"}
    ← {"type":"status-reply","report":{...StatusReport...}}
    → {"type":"invoke","workload":"shop","component":"handler","export":"run","args":[1]}
    ← {"type":"invoke-reply","result":...}
    ← {"type":"error","kind":"Overloaded","message":"component 'handler' is overloaded: ..."}

An ``invoke`` with ``"stream":true`` of a command (no export) is answered by
``output`` messages as the guest writes (``"data"`` is base64), then the reply::

    → {"type":"invoke","workload":"shop","component":"report","stream":true}
    ← {"type":"output","stream":"stdout","data":"aGVsbG8K"}
    ← {"type":"invoke-reply","result":{"exit_code":0,"stdout":"","stderr":""}}

A connection may carry any number of requests, answered in order.  The server
calls an object implementing ``ControlTarget``; errors become ``error`` replies
whose ``kind`` is the exception's class name.  After ``stop_invocations()``
(shutdown), ``invoke`` is answered with kind ``ShuttingDown`` while ``status``
still works.

Socket path (``default_control_path``): ``$FABRIC_CONTROL`` if set; otherwise
``<runtime dir>/<manifest stem>-<12 hex of sha256(absolute manifest path)>.sock``
where the runtime dir is ``$XDG_RUNTIME_DIR/fabric`` or ``/tmp/fabric-<uid>``
(created with mode 0700); without a manifest, ``<runtime dir>/fabric.sock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec

from fabric.wasi.io import OutputStream, StreamClosed

from .control_access import (
    ControlAccessError,
    check_server_peer,
    client_allowed,
    describe_uid,
    peer_uid,
    private_directory,
    safe_directory,
    socket_owner,
)
from .errors import ControlError, ControlUnavailable, RemoteError
from .status import StatusReport
from .streaming import HIGH_WATER, FlowOutput, OutputFactory

__all__ = [
    "MAX_LINE",
    "ControlServer",
    "ControlStats",
    "ControlTarget",
    "ErrorReply",
    "HandOff",
    "Invoke",
    "InvokeReply",
    "Output",
    "OutputSink",
    "Request",
    "Response",
    "Status",
    "StatusReply",
    "connect",
    "default_control_path",
    "remote_invoke",
    "remote_status",
    "request",
    "runtime_dir",
]

MAX_LINE = 64 * 1024 * 1024
BACKLOG = 4096  # the kernel caps it at net.core.somaxconn
CONNECT_PATIENCE = 10.0  # seconds a client retries a socket whose backlog is full
_log = logging.getLogger("fabric.workload.control")


class Status(msgspec.Struct, tag="status", frozen=True):
    """Ask for the status report."""


class Invoke(msgspec.Struct, tag="invoke", frozen=True, kw_only=True):
    """Invoke ``export`` (None: the component's default export) of a component."""

    workload: str
    component: str
    export: str | None = None
    args: list[Any] = []
    stream: bool = False


class Output(msgspec.Struct, tag="output", frozen=True):
    """A piece of a streamed invocation's stdout or stderr."""

    stream: Literal["stdout", "stderr"]
    data: bytes


class StatusReply(msgspec.Struct, tag="status-reply", frozen=True):
    report: StatusReport


class InvokeReply(msgspec.Struct, tag="invoke-reply", frozen=True):
    result: Any = None


class ErrorReply(msgspec.Struct, tag="error", frozen=True):
    kind: str
    message: str


Request = Status | Invoke
Response = StatusReply | InvokeReply | ErrorReply | Output

_encoder = msgspec.json.Encoder()
_request_decoder: msgspec.json.Decoder[Request] = msgspec.json.Decoder(Request)
_response_decoder: msgspec.json.Decoder[Response] = msgspec.json.Decoder(Response)


class ControlTarget(Protocol):
    """What the control server serves (the running fabric, or the parent of its
    workers, whose status is gathered asynchronously)."""

    def status(self) -> StatusReport | Awaitable[StatusReport]: ...

    async def invoke(
        self,
        workload: str,
        component: str,
        export: str | None,
        args: list[Any],
        output: OutputFactory | None = None,
    ) -> Any: ...


class ControlStats(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    listening: bool
    draining: bool
    connections: int
    requests: int
    errors: int
    in_flight: int
    handed_off: int = 0


def runtime_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The private directory of the default control sockets (see module doc)."""
    environ = os.environ if environ is None else environ
    xdg = environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "fabric"
    return Path("/tmp") / f"fabric-{os.getuid()}"


def default_control_path(
    manifest: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Path:
    """Where the control socket of the fabric running ``manifest`` lives (see module doc)."""
    env = os.environ if environ is None else environ
    explicit = env.get("FABRIC_CONTROL")
    if explicit:
        return Path(explicit)
    base = runtime_dir(env)
    if manifest is None:
        return base / "fabric.sock"
    absolute = os.path.abspath(os.fspath(manifest))
    digest = hashlib.sha256(absolute.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    stem = Path(absolute).stem[:40] or "manifest"
    return base / f"{stem}-{digest}.sock"


class ControlServer:
    """Serves a ``ControlTarget`` on a Unix socket."""

    def __init__(
        self,
        target: ControlTarget,
        path: str | os.PathLike[str],
        *,
        private_dir: bool | None = None,
        handoff: HandOff | None = None,
    ) -> None:
        """``private_dir``: hold the socket's directory to the rules of the runtime
        directory (created 0700, owned by the user, closed to others); by default
        only when it is the runtime directory.

        ``handoff``: called with the first ``invoke`` line of a connection (after
        the access checks), its reader and writer; when it returns True it has
        passed the connection on (``fabric run --workers``: to a worker, which
        ``adopt`` it) and this server only closes its own descriptor."""
        self.target = target
        self.handoff = handoff
        self.handed_off = 0
        self.path = Path(path)
        self.private_dir = self.path.parent == runtime_dir() if private_dir is None else private_dir
        self.draining = False
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._adopting: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0
        self.total_connections = 0
        self.requests = 0
        self.errors = 0

    async def prepare(self) -> None:
        """Check that the socket can be served here, without binding it.

        Raises ``ControlAccessError`` for a directory or socket path that belongs
        to someone else or is open to others, ``ControlError`` when the path is
        not a socket or another fabric serves it; a stale socket is removed.
        """
        directory = self.path.parent
        if self.private_dir or not directory.exists():
            private_directory(directory)
        else:
            safe_directory(directory)
        socket_owner(self.path)
        await self._clear_stale()

    async def start(self) -> None:
        """Bind the socket (replacing a stale one; refusing if another fabric serves it)."""
        await self.prepare()
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MAX_LINE, backlog=BACKLOG
        )
        os.chmod(self.path, 0o600)
        self._inode = self.path.stat().st_ino

    async def _clear_stale(self) -> None:
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlError(f"{self.path} exists and is not a socket")
        try:
            _, writer = await asyncio.open_unix_connection(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            self.path.unlink(missing_ok=True)
            return
        writer.close()
        raise ControlError(f"another fabric is already serving {self.path}")

    def stop_invocations(self) -> None:
        """Answer new ``invoke`` requests with ``ShuttingDown`` from now on."""
        self.draining = True

    async def close(self, grace: float = 0.0) -> None:
        """Stop listening, give requests in flight up to ``grace`` seconds, then hang up."""
        self.draining = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections)
        if server is not None:
            await server.wait_closed()
        with contextlib.suppress(OSError):
            if self._inode is not None and self.path.stat().st_ino == self._inode:
                self.path.unlink()
        self._inode = None

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def adopt(self, sock: socket.socket, data: bytes, done: Callable[[], object]) -> None:
        """Serve a connection another process accepted (and checked) and passed here,
        ``data`` being what it had already read from it. ``done()`` is called once
        the connection is over; it is shut down then (the process that passed it
        may still hold a descriptor of it)."""
        task = asyncio.get_running_loop().create_task(self._adopt(sock, data, done))
        self._adopting.add(task)  # a strong reference until it ends
        task.add_done_callback(self._adopting.discard)

    async def _adopt(self, sock: socket.socket, data: bytes, done: Callable[[], object]) -> None:
        spare = sock.dup()  # the transport owns ``sock``; this one shuts the connection down
        try:
            if self._server is None:
                sock.close()
                return  # closed, or not started yet
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=MAX_LINE, loop=loop)
            reader.feed_data(data)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self._serve(reader, writer)
        except OSError:
            sock.close()
        finally:
            with contextlib.suppress(OSError):
                spare.shutdown(socket.SHUT_RDWR)
            spare.close()
            done()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.total_connections += 1
        try:
            if not self._admit(writer):
                return
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_LINE
                    reply = ErrorReply("bad-request", f"request longer than {MAX_LINE} bytes")
                    writer.write(_encoder.encode(reply) + b"\n")
                    await writer.drain()
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                if self.handoff is not None and not self.draining and _is_invoke(line):
                    if self.handoff(line, reader, writer):
                        self.handed_off += 1
                        return
                writer.write(await self._answer(line, writer) + b"\n")
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away; the others are not affected
        except asyncio.CancelledError:
            # close() hangs up this way; asyncio's stream protocol reports a cancelled
            # connection task to the loop's exception handler, so end it normally
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        """Serve only our own user and root; tell anyone else why, then hang up."""
        sock = writer.get_extra_info("socket")
        try:
            uid = peer_uid(sock)
        except (OSError, AttributeError):
            self.errors += 1
            return False
        if client_allowed(uid):
            return True
        self.errors += 1
        _log.warning("control socket %s: refused a client of %s", self.path, describe_uid(uid))
        reply = ErrorReply(
            "Forbidden", f"{describe_uid(uid)} may not use this fabric's control socket"
        )
        writer.write(_encoder.encode(reply) + b"\n")
        return False

    async def _answer(self, line: bytes, writer: asyncio.StreamWriter) -> bytes:
        self.requests += 1
        self._in_flight += 1
        self._idle.clear()
        try:
            reply = await self._dispatch(line, writer)
            try:
                return _encoder.encode(reply)
            except (TypeError, msgspec.EncodeError) as exc:
                reply = ErrorReply("unencodable-result", f"result cannot be sent as JSON: {exc}")
                return _encoder.encode(reply)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _dispatch(self, line: bytes, writer: asyncio.StreamWriter) -> Response:
        try:
            message = _request_decoder.decode(line)
        except msgspec.DecodeError as exc:
            self.errors += 1
            return ErrorReply("bad-request", str(exc))
        try:
            if isinstance(message, Status):
                report = self.target.status()
                if inspect.isawaitable(report):
                    report = await report
                return StatusReply(report)
            if self.draining:
                self.errors += 1
                return ErrorReply("ShuttingDown", "fabric is shutting down")
            if message.stream:
                result = await self.target.invoke(
                    message.workload,
                    message.component,
                    message.export,
                    message.args,
                    output=_streamer(writer),
                )
            else:
                result = await self.target.invoke(
                    message.workload, message.component, message.export, message.args
                )
            return InvokeReply(result)
        except RemoteError as exc:  # relayed from a worker: keep the worker's error kind
            self.errors += 1
            return ErrorReply(exc.kind, exc.message)
        except Exception as exc:
            self.errors += 1
            _log.debug("control request failed", exc_info=True)
            return ErrorReply(type(exc).__name__, str(exc))

    def statistics(self) -> ControlStats:
        return ControlStats(
            path=str(self.path),
            listening=self._server is not None,
            draining=self.draining,
            connections=len(self._connections),
            requests=self.requests,
            errors=self.errors,
            in_flight=self._in_flight,
            handed_off=self.handed_off,
        )

    def __repr__(self) -> str:
        return (
            f"<ControlServer {str(self.path)!r} connections={len(self._connections)} "
            f"requests={self.requests} errors={self.errors} in_flight={self._in_flight}>"
        )


def _is_invoke(line: bytes) -> bool:
    try:
        return isinstance(_request_decoder.decode(line), Invoke)
    except msgspec.DecodeError:
        return False


def _streamer(writer: asyncio.StreamWriter) -> OutputFactory:
    """Streams that send a guest's output to the client as ``output`` messages."""

    def room() -> int:
        if writer.is_closing():
            raise StreamClosed()
        return max(0, HIGH_WATER - writer.transport.get_write_buffer_size())

    def factory(name: str, also: Any = None) -> OutputStream:
        kind: Literal["stdout", "stderr"] = "stderr" if name == "stderr" else "stdout"

        def send(data: bytes) -> None:
            writer.write(_encoder.encode(Output(kind, data)) + b"\n")

        return FlowOutput(send, room, writer.drain, also)

    return factory


HandOff = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], bool]
"""``handoff(first_line, reader, writer)``: True when the connection was passed on."""

OutputSink = Callable[[str, bytes], object]
"""``sink("stdout" | "stderr", data)``: where a streamed invocation's output goes."""


async def request(
    path: str | os.PathLike[str], message: Request, on_output: OutputSink | None = None
) -> Response:
    """Send one request and return the reply (bound the wait with ``asyncio.timeout``).

    ``output`` messages before the reply go to ``on_output``.
    """
    where = os.fspath(path)
    reader, writer = await _connect(where)
    try:
        writer.write(_encoder.encode(message) + b"\n")
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                raise ControlError(f"{where} closed the connection without a reply")
            try:
                reply = _response_decoder.decode(line)
            except msgspec.DecodeError as exc:
                raise ControlError(f"{where} sent a malformed reply: {exc}") from None
            if not isinstance(reply, Output):
                return reply
            if on_output is not None:
                on_output(reply.stream, reply.data)
    except (ValueError, asyncio.LimitOverrunError):
        raise ControlError(f"{where} sent a reply longer than {MAX_LINE} bytes") from None
    except OSError as exc:
        raise ControlError(f"control connection to {where} failed: {exc.strerror or exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def connect(
    path: str | os.PathLike[str],
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the control socket at ``path``, with the checks ``request`` makes
    (the server runs as our user; a full backlog is retried), for a client that
    sends several requests over one connection (``fabric run --workers``)."""
    return await _connect(os.fspath(path))


async def _connect(where: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a server of our own user, retrying for a while when its backlog is full.

    A full backlog shows as ``EAGAIN`` or, with asyncio's own loop, as a
    "connection" that is not one (no peer credentials; writing to it fails
    with ``ENOTCONN``): both are retried.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + CONNECT_PATIENCE
    pause = 0.005
    while True:
        try:
            reader, writer = await asyncio.open_unix_connection(where, limit=MAX_LINE)
            sock = writer.get_extra_info("socket")
            try:
                connected = peer_uid(sock) != -1
            except OSError:
                connected = False
            if connected:
                try:
                    check_server_peer(sock, where)
                except ControlAccessError:
                    writer.close()
                    raise
                return reader, writer
            writer.close()
            raise BlockingIOError
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlUnavailable(
                f"no fabric is running at {where} ({exc.strerror}); "
                "start one with `fabric run MANIFEST` or set $FABRIC_CONTROL"
            ) from None
        except ValueError as exc:  # a NUL byte or a path too long for sun_path
            raise ControlError(f"cannot use {where!r} as a control socket: {exc}") from None
        except BlockingIOError:
            if loop.time() >= give_up:
                raise ControlError(
                    f"the fabric at {where} is not accepting connections "
                    f"(its backlog stayed full for {CONNECT_PATIENCE:g}s)"
                ) from None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)
        except PermissionError:
            raise ControlAccessError(
                f"permission denied connecting to the control socket {where}"
            ) from None
        except OSError as exc:
            raise ControlError(
                f"cannot connect to the control socket {where}: {exc.strerror or exc}"
            ) from None


async def remote_status(path: str | os.PathLike[str]) -> StatusReport:
    """``fabric status``: the report of the fabric serving ``path``."""
    match await request(path, Status()):
        case StatusReply(report=report):
            return report
        case ErrorReply(kind=kind, message=message):
            raise RemoteError(kind, message)
        case other:
            raise ControlError(f"unexpected reply to status: {other!r}")


async def remote_invoke(
    path: str | os.PathLike[str],
    workload: str,
    component: str,
    export: str | None = None,
    args: Sequence[Any] = (),
    *,
    on_output: OutputSink | None = None,
) -> Any:
    """``fabric invoke``: run a component through the fabric serving ``path``.

    With ``on_output`` a command's stdout and stderr are streamed to it as the
    guest writes them (the result's ``stdout`` and ``stderr`` are then empty).
    """
    message = Invoke(
        workload=workload,
        component=component,
        export=export,
        args=list(args),
        stream=on_output is not None,
    )
    match await request(path, message, on_output):
        case InvokeReply(result=result):
            return result
        case ErrorReply(kind=kind, message=text):
            raise RemoteError(kind, text)
        case other:
            raise ControlError(f"unexpected reply to invoke: {other!r}")
