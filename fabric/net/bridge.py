"""Egress and ingress: bytes between virtual pipes and real uvloop/asyncio sockets.

Egress
    A guest connecting to an address covered by an `EgressRule` gets a
    pipe whose far end belongs to `run_egress`. It opens a real connection
    to the rule's target; the guest's `finish-connect` completes when the
    real connect does (a real failure becomes its error code, a slow one
    `timeout` after `egress_connect_timeout`). Then `splice` pumps both
    ways.

Ingress
    `IngressServer` listens on a real host port and, for each real
    connection, connects into the virtual port as the guest
    `ingress:<port>` (a service, marked external) and splices the two. At
    most `IngressRule.max_connections` are forwarded at once; a client
    beyond that is reset at once. The guest's socket budget is two sockets
    per allowed connection (its own and the accepted one), separate from
    every other guest's.

Ingress fast path
    When the rule's virtual port is served by a native listener
    (`VirtualNetwork.start_server`) and the rule has `direct` (the
    default), the connection is not spliced: the listener's handler runs
    on the real socket's own `asyncio.StreamReader` and an
    `IngressStreamWriter` (an `asyncio.StreamWriter`), so bytes go from the
    kernel to the service with no pump task and no pipe. What the rule
    promises holds the same way: the connection counts against
    `max_connections`, it is charged two sockets of the rule's budget, the
    policy check of a connect to the port runs first, and closing the
    server (workload stop) cancels the handler and resets the connection.
    The service sees the real client's address as `peername` (the splice
    shows the bridge's virtual address instead), `peer_guest`
    `ingress:<port>` and `peer_external` True as through the splice, and
    `ingress_direct` True. Wasm listeners are always spliced.

`splice` copies each direction with backpressure (`await drain()` after
every chunk, so neither side buffers more than its high-water mark plus one
chunk), forwards a half-close as a half-close (`write_eof`), and turns a
reset on either side into a reset on the other (`abort`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from .errors import SocketError, error_code_from_oserror
from .network import GuestNetwork, IngressStatistics, NetworkCore
from .pipe import PipeEnd
from .policy import EgressRule, IngressRule, Role
from .streams import (
    VirtualServer,
    VirtualStreamReader,
    VirtualStreamWriter,
    native_server,
    open_connection,
)
from .tcp import ConnectAttempt

__all__ = ["IngressServer", "IngressStreamWriter", "run_egress", "splice"]

logger = logging.getLogger("fabric.net")

CHUNK = 64 * 1024


class _Reader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class _Writer(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def write_eof(self) -> None: ...

    def close(self) -> None: ...


async def _pump(reader: _Reader, writer: _Writer) -> int:
    total = 0
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
        total += len(data)
    writer.write_eof()
    return total


def _abort(writer: _Writer) -> None:
    if isinstance(writer, VirtualStreamWriter):
        writer.abort()
    elif isinstance(writer, asyncio.StreamWriter):
        writer.transport.abort()
    else:
        writer.close()


async def splice(
    a_reader: _Reader, a_writer: _Writer, b_reader: _Reader, b_writer: _Writer
) -> tuple[int, int]:
    """Copy a->b and b->a until both reach EOF; returns the byte counts."""
    loop = asyncio.get_running_loop()
    forward = loop.create_task(_pump(a_reader, b_writer))
    backward = loop.create_task(_pump(b_reader, a_writer))
    tasks = {forward, backward}
    failed = True
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = any(t.done() and not t.cancelled() and t.exception() for t in tasks)
        if not failed:
            await asyncio.gather(*tasks)
            return forward.result(), backward.result()
        return 0, 0
    finally:
        for task in tasks:
            task.cancel()
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            # Also when cancelled while waiting for the pumps (server shutdown):
            # the writers are closed whatever happens.
            if failed:
                _abort(a_writer)
                _abort(b_writer)
            a_writer.close()
            b_writer.close()
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, OSError):
                logger.error("splice pump failed: %r", result)


async def run_egress(
    rule: EgressRule,
    attempt: ConnectAttempt,
    client_end: PipeEnd,
    bridge_end: PipeEnd,
    connect_timeout: float,
) -> bool:
    """Connect to the rule's real target, complete `attempt`, then pump. True if connected."""
    try:
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(rule.target_host, rule.target_port)
    except asyncio.CancelledError:
        client_end.abort()
        bridge_end.abort()
        raise
    except OSError as exc:
        code = error_code_from_oserror(exc)
        logger.info(
            "egress to %s:%d (%s:%d) failed: %s",
            rule.target_host,
            rule.target_port,
            rule.destination,
            rule.port,
            code.value,
        )
        attempt.fail(code, str(exc))
        client_end.abort()
        bridge_end.abort()
        return False
    if attempt.done():  # the guest dropped the socket meanwhile
        writer.close()
        client_end.abort()
        bridge_end.abort()
        return False
    attempt.succeed(client_end)
    virtual_writer = VirtualStreamWriter(bridge_end, bridge_end.close)
    await splice(reader, writer, VirtualStreamReader(bridge_end), virtual_writer)
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class IngressStreamWriter(asyncio.StreamWriter):
    """The writer a native service gets on the ingress fast path: the real
    connection's `asyncio.StreamWriter`, plus the extra information a
    virtual connection carries (`peer_guest`, `peer_external`)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, extra: dict[str, Any]
    ) -> None:
        transport = writer.transport
        super().__init__(transport, transport.get_protocol(), reader, asyncio.get_running_loop())
        self._fabric_extra = extra

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._fabric_extra:
            return self._fabric_extra[name]
        return super().get_extra_info(name, default)


class IngressServer:
    """A real listener that forwards every connection to a virtual port."""

    def __init__(self, network: NetworkCore, rule: IngressRule) -> None:
        self.network = network
        self.rule = rule
        self._server: asyncio.Server | None = None
        self._guest: GuestNetwork | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.refused = 0
        self.over_limit = 0  # clients reset because `max_connections` were being forwarded
        self.direct = 0  # of `connections`: handed to a native listener (no splice)

    async def start(self) -> None:
        self._guest = self.network.attach(
            f"ingress:{self.rule.port}",
            Role.SERVICE,
            max_sockets=2 * self.rule.max_connections,
            external=True,
        )
        self._server = await asyncio.start_server(
            self._handle,
            self.rule.host,
            self.rule.host_port,
            reuse_port=True if self.rule.reuse_port else None,
        )

    @property
    def port(self) -> int:
        """The real port (useful when the rule asked for port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        return self.rule.host

    @property
    def active(self) -> int:
        return len(self._tasks)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tasks) >= self.rule.max_connections:
            self.refused += 1
            self.over_limit += 1
            logger.info(
                "ingress %s -> :%d: %d connections open, client refused",
                self.port,
                self.rule.port,
                len(self._tasks),
            )
            writer.transport.abort()
            return
        # asyncio's start_server reports a cancelled handler task as an error,
        # so the cancellable work runs in a task of its own.
        task = asyncio.get_running_loop().create_task(self._forward(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._guest is not None
        if self.rule.direct:
            try:
                server = native_server(self._guest, self.rule.port)
            except OSError as exc:
                self.refused += 1
                logger.info("ingress %s -> :%d refused: %s", self.port, self.rule.port, exc)
                writer.transport.abort()
                return
            if server is not None:
                await self._serve_direct(server, reader, writer)
                return
        try:
            v_reader, v_writer = await open_connection(self._guest, self.rule.port)
        except OSError as exc:
            self.refused += 1
            logger.info("ingress %s -> :%d refused: %s", self.port, self.rule.port, exc)
            writer.transport.abort()
            return
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        self.connections += 1
        await splice(reader, writer, v_reader, v_writer)
        # The real transport closes on a later loop iteration: wait for it, so
        # that no connection outlives the server (uvloop refuses to close a
        # loop with open handles).
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def _serve_direct(
        self, server: VirtualServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The fast path: run the native listener's handler on the real streams."""
        assert self._guest is not None
        budget = self._guest.budget
        try:
            budget.take(2)  # the client's socket and the accepted one, as spliced
        except SocketError as exc:
            self.refused += 1
            logger.info("ingress %s -> :%d refused: %s", self.port, self.rule.port, exc)
            writer.transport.abort()
            return
        self.connections += 1
        self.direct += 1
        self.network.count_connection()
        direct = IngressStreamWriter(
            reader,
            writer,
            {"peer_guest": self._guest.name, "peer_external": True, "ingress_direct": True},
        )
        try:
            await server.serve_direct(reader, direct)
        except BaseException:
            writer.transport.abort()  # reset, as the splice does
            raise
        finally:
            budget.give_back(2)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._guest is not None:
            self._guest.close()

    def statistics(self) -> IngressStatistics:
        return IngressStatistics(
            port=self.rule.port,
            host=self.rule.host,
            host_port=self.port if self._server is not None and self._server.sockets else 0,
            active=len(self._tasks),
            max_connections=self.rule.max_connections,
            connections=self.connections,
            direct=self.direct,
            refused=self.refused,
            over_limit=self.over_limit,
        )

    def __repr__(self) -> str:
        where = f"{self.rule.host}:{self.port}" if self._server else "not started"
        return (
            f"<IngressServer {where} -> :{self.rule.port} active={len(self._tasks)}"
            f"/{self.rule.max_connections} connections={self.connections}"
            f" direct={self.direct} refused={self.refused}>"
        )
