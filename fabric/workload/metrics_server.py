"""The metrics endpoint and health probes: a small HTTP/1.1 server on the fabric's loop.

``MetricsServer`` listens on a real host address (``[metrics] listen``) with
``asyncio.start_server`` (the same uvloop loop that runs the workloads: no
thread touches a loop object) and parses requests with h11, which is sans-IO.
It answers ``GET`` and ``HEAD`` of:

* ``/metrics``: `exposition.render` of a fresh status report, in the Prometheus
  text format or OpenMetrics (by the ``Accept`` header);
* ``/healthz``: ``200 ok`` whenever the loop answers (liveness);
* ``/readyz``: ``200 ready``, or ``503`` with one reason per line
  (`health.not_ready`: starting, draining, a service not ready).

Bounded: at most ``max_clients`` connections (more are answered ``503`` and
closed at once), a request head of at most ``max_request_size`` bytes
(``431``), no request bodies (``413``), every request read within
``timeout`` (an idle kept-alive connection is closed after it too), every
reply written within ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import h11

from .checks import split_listen
from .errors import WorkloadError
from .exposition import metrics_registry, render
from .health import not_ready
from .manifest import MetricsSpec
from .status import StatusReport

__all__ = ["MetricsServer", "serve_metrics"]

_log = logging.getLogger("fabric.workload.metrics")

_READ = 4096
_TEXT = "text/plain; charset=utf-8"
_PATHS = ("/metrics", "/healthz", "/readyz")


class _Reply:
    __slots__ = ("body", "close", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str = _TEXT,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        close: bool = False,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers
        self.close = close


async def serve_metrics(spec: MetricsSpec, source: Callable[[], StatusReport]) -> MetricsServer:
    """Start the endpoint a manifest's ``[metrics]`` table describes."""
    listen = split_listen(spec.listen)
    if listen is None:  # validation refuses it first
        raise WorkloadError(f"metrics: cannot listen on {spec.listen!r}")
    server = MetricsServer(
        source,
        host=listen[0],
        port=listen[1],
        max_clients=spec.max_clients,
        timeout=float(spec.timeout),
        max_request_size=int(spec.max_request_size),
    )
    await server.start()
    return server


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` for the status reports of ``source``."""

    def __init__(
        self,
        source: Callable[[], StatusReport],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_clients: int = 16,
        timeout: float = 10.0,
        max_request_size: int = 8192,
    ) -> None:
        self._source = source
        self._registry = metrics_registry(source)
        self.host = host
        self.port = port
        self.max_clients = max_clients
        self.timeout = timeout
        self.max_request_size = max_request_size
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.requests = 0
        self.refused = 0

    async def start(self) -> None:
        """Listen; a ``WorkloadError`` names the address when it cannot be bound."""
        try:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
        except OSError as exc:
            raise WorkloadError(
                f"metrics: cannot listen on {self.url}: {exc.strerror or exc}"
            ) from None
        self.port = int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def clients(self) -> int:
        """Connections being served now."""
        return len(self._clients)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.wait(self._clients)
        if server is not None:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._clients) >= self.max_clients:
            self.refused += 1
            with contextlib.suppress(OSError):
                writer.write(_raw(503, b"too many clients\n"))
            writer.close()
            return
        self._clients.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, TimeoutError, h11.ProtocolError):
            pass  # the client went away, stalled, or broke the protocol: close
        except asyncio.CancelledError:
            pass  # the server closes
        finally:
            self._clients.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_request_size)
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    event = await _next_request(conn, reader, self.max_request_size)
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                await self._write(writer, _raw(status, f"{status} bad request\n".encode()))
                return
            if event is None:  # the client closed between requests
                return
            self.requests += 1
            reply = self._reply(event)
            if reply.close or conn.their_state is not h11.DONE:
                reply.close = True  # a request body we did not read: close after the reply
            head = [
                ("content-type", reply.content_type),
                ("content-length", str(len(reply.body))),
                ("cache-control", "no-store"),
                *reply.headers,
            ]
            if reply.close:
                head.append(("connection", "close"))
            data = conn.send(h11.Response(status_code=reply.status, headers=head)) or b""
            if event.method != b"HEAD":
                data += conn.send(h11.Data(data=reply.body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
            await self._write(writer, data)
            if reply.close or conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        async with asyncio.timeout(self.timeout):
            await writer.drain()

    def _reply(self, request: h11.Request) -> _Reply:
        target = request.target.decode("ascii", "replace")
        path = target.split("?", 1)[0]
        if path not in _PATHS:
            return _Reply(404, b"not found: try /metrics, /healthz or /readyz\n")
        if request.method not in (b"GET", b"HEAD"):
            return _Reply(405, b"method not allowed\n", headers=(("allow", "GET, HEAD"),))
        if _has_body(request):
            return _Reply(413, b"a request body is not accepted\n", close=True)
        if path == "/healthz":
            return _Reply(200, b"ok\n")
        try:
            report = self._source()
        except Exception:
            _log.exception("metrics: status report failed")
            return _Reply(500, b"status report failed\n")
        if path == "/readyz":
            reasons = not_ready(report)
            if reasons:
                return _Reply(503, "".join(f"{r}\n" for r in reasons).encode())
            return _Reply(200, b"ready\n")
        accept = ""
        for name, value in request.headers:
            if name == b"accept":
                accept = value.decode("latin-1")
        try:
            body, content_type = render(self._registry, accept)
        except Exception:
            _log.exception("metrics: exposition failed")
            return _Reply(500, b"exposition failed\n")
        return _Reply(200, body, content_type)

    def __repr__(self) -> str:
        state = "listening" if self._server is not None else "closed"
        return (
            f"<MetricsServer {state} {self.url} clients={len(self._clients)}/{self.max_clients} "
            f"requests={self.requests} refused={self.refused}>"
        )


async def _next_request(
    conn: h11.Connection, reader: asyncio.StreamReader, limit: int
) -> h11.Request | None:
    """The next request, read to its end when it has no body (a request with a body
    is returned at its head: it is refused and the connection closed); None when
    the client closed cleanly before one.  More than ``limit`` bytes read before
    the head is complete: ``RemoteProtocolError`` (431)."""
    request: h11.Request | None = None
    received = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(_READ)
            if not data and conn.their_state is h11.IDLE:
                return None
            received += len(data)
            if received > limit and request is None:
                raise h11.RemoteProtocolError("request head too large", 431)
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            if _has_body(event):
                return event
            request = event
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None
        else:
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}", 400)


def _has_body(request: h11.Request) -> bool:
    for name, value in request.headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def _raw(status: int, body: bytes) -> bytes:
    """A complete response outside any h11 connection (refusals, protocol errors)."""
    reason = {400: "Bad Request", 431: "Request Header Fields Too Large", 503: "Unavailable"}
    return (
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
        f"content-type: {_TEXT}\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body
