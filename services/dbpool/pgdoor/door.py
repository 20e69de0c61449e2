"""The PostgreSQL front door: unmodified PostgreSQL clients (psql, pgbench, asyncpg,
psycopg...) use the dbpool service's databases through transaction pooling.

`PgFrontDoor.handle_connection(reader, writer)` serves one client: startup (TLS
and GSS encryption refused with 'N'), authentication (SCRAM-SHA-256 or trust,
per configured user), then the relay loop: client messages go to a server
session leased from the database's `pools.PgWirePool` for the length of a
transaction (or one statement outside a transaction), the server's replies come
back unchanged except where `relay.Relay` must step in. A CancelRequest carrying
a client's key is forwarded to the server session that client holds.

LISTEN/UNLISTEN are answered here and registered with the database's
`notify.DatabaseListener`, whose dedicated server connection listens on the
union of the clients' channels; its notifications are written to each listening
client between the client's messages (held while a reply to the client is being
relayed), within ``max_notification_bytes`` unread per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from collections import Counter, deque
from collections.abc import Hashable, Mapping
from typing import Any

import msgspec

from pools import (
    AcquireTimeout,
    ConnectFailed,
    DatabaseConfig,
    PgConnection,
    PgWireLease,
    PgWirePool,
    PoolError,
    send_cancel,
)

from ..messages import DatabaseStats, Limits, PostgresFrontDoorStats
from .admin import AdminConsole
from .config import ADMIN_DATABASES, PostgresFrontDoorConfig, load_password
from .notify import DatabaseListener
from .relay import ProtocolViolation, Relay
from .scram import MECHANISM, ScramError, ScramServer, ScramVerifier
from .wire import (
    I32,
    BadStartup,
    CancelRequest,
    EncryptionRequest,
    Startup,
    auth_request,
    backend_key_data,
    error_response,
    negotiate_protocol_version,
    parameter_status,
    parse_startup,
    ready_for_query,
    startup_length,
)

__all__ = ["PgFrontDoor"]

log = logging.getLogger("services.dbpool.pgdoor")

_READ = 65536
_AUTH_MESSAGE_LIMIT = 8192
#: reply bytes written to a client between two waits for it to read them
_DRAIN_AFTER = 64 * 1024
#: startup parameters a client may send that change nothing here
_IGNORED_PARAMS = frozenset(
    {"user", "database", "application_name", "fallback_application_name", "extra_float_digits"}
)
#: startup parameters accepted when they match the pool's sessions
_MATCHED_PARAMS = ("client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings")
#: what the admin console reports (it has no server session of its own)
_ADMIN_PARAMS = {
    "server_version": "15.0 (fabric)",
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "DateStyle": "ISO",
    "integer_datetimes": "on",
    "standard_conforming_strings": "on",
}
_UTF8 = frozenset({"UTF8", "UNICODE", "AUTO"})


class _Closed(Exception):
    """The client went away."""


class _In:
    """Buffered reads from a stream that only offers ``read(n)``."""

    __slots__ = ("_buf", "_reader")

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._buf = b""

    async def exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = await self._reader.read(_READ)
            if not chunk:
                raise _Closed
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    async def typed(self, limit: int) -> tuple[bytes, bytes]:
        header = await self.exactly(5)
        size = I32.unpack_from(header, 1)[0]
        if size < 4 or size - 4 > limit:
            raise ProtocolViolation("08P01", f"invalid message length {size}")
        return header[:1], await self.exactly(size - 4)

    def take(self) -> bytes:
        out, self._buf = self._buf, b""
        return out


class _Client:
    __slots__ = (
        "busy",
        "database",
        "flusher",
        "held",
        "held_bytes",
        "key",
        "lease",
        "pid",
        "relay",
        "task",
        "unflushed",
        "user",
        "writer",
    )

    def __init__(
        self, pid: int, key: bytes, user: str, database: str, relay: Relay, writer: Any
    ) -> None:
        self.pid = pid
        self.key = key
        self.user = user
        self.database = database
        self.relay = relay
        self.writer = writer
        self.task = asyncio.current_task()
        self.lease: PgWireLease | None = None
        self.unflushed = 0  # bytes written to the client since the last drain
        #: between reading a client's messages and writing the last reply to them:
        #: notifications are held until then
        self.busy = False
        self.held: deque[bytes] = deque()
        self.held_bytes = 0
        self.flusher: asyncio.Task[None] | None = None


class PgFrontDoor:
    """Transaction pooling for PostgreSQL clients over the service's databases."""

    def __init__(
        self,
        config: PostgresFrontDoorConfig,
        databases: Mapping[str, DatabaseConfig],
        limits: Limits | None = None,
    ) -> None:
        self.config = config
        self.limits = limits or Limits()
        self.database_configs = {n: c for n, c in databases.items() if c.kind == "postgres"}
        self.pools: dict[str, PgWirePool] = {}
        self._verifiers: dict[str, ScramVerifier] = {}
        self._clients: dict[int, _Client] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.port = config.port
        self.clients_total = 0
        self.clients_rejected = 0
        self.auth_failures = 0
        self.cancel_requests = 0
        self.leases = 0
        self.transactions_abandoned = 0
        self.errors: Counter[str] = Counter()
        self.bytes_received = 0
        self.bytes_sent = 0
        self.listeners: dict[str, DatabaseListener] = {}
        self.notifications_delivered = 0
        self.notification_overflows = 0
        self.admin = AdminConsole(self)

    def __repr__(self) -> str:
        return (
            f"<PgFrontDoor port={self.port} databases={sorted(self.database_configs)} "
            f"clients={len(self._clients)} leases={self.leases}>"
        )

    async def start(self) -> None:
        for name, user in self.config.users.items():
            if user.auth == "scram-sha-256":
                self._verifiers[name] = ScramVerifier.from_password(load_password(name, user))
        self.pools = {name: PgWirePool(cfg) for name, cfg in self.database_configs.items()}
        results = await asyncio.gather(
            *(p.start() for p in self.pools.values()), return_exceptions=True
        )
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await self.close()
            raise failure

    async def close(self, grace: float = 5.0) -> None:
        self._closing = True
        listeners = list(self.listeners.values())
        await asyncio.gather(*(lst.stop() for lst in listeners), return_exceptions=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        pools, self.pools = self.pools, {}
        await asyncio.gather(*(p.close() for p in pools.values()), return_exceptions=True)

    # ---------------------------------------------------------------- clients

    async def handle_connection(self, reader: Any, writer: Any) -> None:
        """Serve one client until it leaves; never raises for client behaviour."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        inp = _In(reader)
        client: _Client | None = None
        try:
            try:
                async with asyncio.timeout(self.limits.handshake_timeout):
                    client = await self._handshake(inp, writer)
            except TimeoutError:
                self._refuse(writer, "08P01", "timeout waiting for the startup packet")
            if client is not None:
                await self._serve(client, inp, reader, writer)
        except (_Closed, ConnectionError, asyncio.CancelledError):
            pass
        except (BadStartup, ProtocolViolation) as exc:
            self._refuse(writer, exc.sqlstate, exc.text)
        except _ServerLost:
            self._refuse(writer, "08006", "the server closed the connection unexpectedly")
        except Exception:
            log.exception("pgdoor: client failed")
        finally:
            if client is not None:
                self._clients.pop(client.pid, None)
                listener = self.listeners.get(client.database)
                if listener is not None:
                    listener.drop(client.pid)
                if client.flusher is not None:
                    client.flusher.cancel()
                await self._give_back(client, abandon=True)
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    def _refuse(self, writer: Any, sqlstate: str, text: str) -> None:
        self.errors[sqlstate] += 1
        with contextlib.suppress(Exception):
            writer.write(error_response(sqlstate, text, severity="FATAL"))

    async def _handshake(self, inp: _In, writer: Any) -> _Client | None:
        while True:
            header = await inp.exactly(4)
            try:
                size = startup_length(header)
                packet = parse_startup(header + await inp.exactly(size - 4))
            except BadStartup:
                self.clients_rejected += 1
                raise
            if isinstance(packet, EncryptionRequest):
                writer.write(b"N")
                continue
            if isinstance(packet, CancelRequest):
                await self._cancel(packet)
                return None
            break
        assert isinstance(packet, Startup)
        params = packet.params
        if packet.minor > 0 or any(k.startswith("_pq_.") for k in params):
            writer.write(negotiate_protocol_version([k for k in params if k.startswith("_pq_.")]))
        user_name = params["user"]
        database = params.get("database") or user_name
        user = self.config.users.get(user_name)
        if self._closing:
            raise self._rejected("57P03", "the front door is shutting down")
        if len(self._clients) >= self.limits.max_clients:
            raise self._rejected("53300", "sorry, too many clients already")
        if user is None:
            self.auth_failures += 1
            raise ProtocolViolation("28000", f'role "{user_name}" is not allowed to connect')
        admin = database in ADMIN_DATABASES
        if admin and not user.admin:
            raise self._rejected("42501", f'user "{user_name}" may not use the admin console')
        pool = None if admin else self.pools.get(database)
        if pool is None and not admin:
            raise self._rejected("3D000", f'database "{database}" does not exist')
        if pool is not None:
            self._check_params(params, pool)
        await self._authenticate(inp, writer, user_name, user.auth)
        try:
            found = await self._server_params(pool) if pool is not None else _ADMIN_PARAMS
        except PoolError as exc:
            raise ProtocolViolation("08006", f"cannot reach the database: {exc}") from None
        server_params = dict(found)
        pid = self._new_pid()
        key = secrets.token_bytes(4)
        relay = Relay(
            max_message_size=self.limits.max_frame_size,
            max_statements=self.config.max_prepared_statements,
            max_channels=self.config.max_listen_channels,
        )
        client = _Client(pid, key, user_name, database, relay, writer)
        if params.get("application_name"):
            server_params["application_name"] = params["application_name"]
        out = [auth_request(0)]
        out += [parameter_status(k, v) for k, v in server_params.items()]
        out += [backend_key_data(pid, key), ready_for_query()]
        writer.write(b"".join(out))
        self._clients[pid] = client
        self.clients_total += 1
        return client

    def _rejected(self, sqlstate: str, text: str) -> ProtocolViolation:
        self.clients_rejected += 1
        return ProtocolViolation(sqlstate, text)

    def _new_pid(self) -> int:
        while True:
            pid = secrets.randbelow(2**31 - 2) + 1
            if pid not in self._clients:
                return pid

    def _check_params(self, params: dict[str, str], pool: PgWirePool) -> None:
        server = pool.server_params
        for name, value in params.items():
            if name in _IGNORED_PARAMS:
                continue
            if name in _MATCHED_PARAMS:
                value = value.strip("'\" ")
                if name == "client_encoding" and value.upper().replace("-", "") in _UTF8:
                    continue
                if not server or server.get(name, "").lower() == value.lower():
                    continue
                raise self._rejected(
                    "0A000",
                    f"startup parameter {name}={value} differs from the pool's "
                    f"({server.get(name)}); transaction pooling cannot honour it",
                )
            if name.startswith("_pq_."):
                continue
            raise self._rejected(
                "0A000", f"unsupported startup parameter in transaction pooling mode: {name}"
            )

    async def _authenticate(self, inp: _In, writer: Any, name: str, method: str) -> None:
        if method == "trust":
            return
        verifier = self._verifiers[name]
        writer.write(auth_request(10, MECHANISM.encode() + b"\0\0"))
        failed = f'password authentication failed for user "{name}"'
        try:
            kind, body = await inp.typed(_AUTH_MESSAGE_LIMIT)
            if kind != b"p":
                raise ProtocolViolation("08P01", f"expected SASL response, got {kind!r}")
            mech_end = body.index(b"\0")
            if body[:mech_end].decode(errors="replace") != MECHANISM:
                raise ProtocolViolation("28000", "client selected an invalid SASL mechanism")
            (size,) = I32.unpack_from(body, mech_end + 1)
            first = body[mech_end + 5 : mech_end + 5 + size] if size >= 0 else b""
            scram = ScramServer(verifier)
            writer.write(auth_request(11, scram.first(first)))
            kind, body = await inp.typed(_AUTH_MESSAGE_LIMIT)
            if kind != b"p":
                raise ProtocolViolation("08P01", f"expected SASL response, got {kind!r}")
            final = scram.final(body)
        except ScramError as exc:
            self.auth_failures += 1
            text = failed if "password" in str(exc) else str(exc)
            raise ProtocolViolation("28P01" if text == failed else "08P01", text) from None
        except (ValueError, IndexError):
            self.auth_failures += 1
            raise ProtocolViolation("08P01", "malformed SASL message") from None
        writer.write(auth_request(12, final))

    async def _server_params(self, pool: PgWirePool) -> dict[str, str]:
        if not pool.server_params:  # no session opened yet: open one
            await pool.release(await pool.acquire())
        return pool.server_params

    async def _cancel(self, request: CancelRequest) -> None:
        self.cancel_requests += 1
        client = self._clients.get(request.pid)
        if client is None or not hmac.compare_digest(client.key, request.key):
            return
        lease = client.lease
        if lease is None:
            return
        conn = lease.connection
        with contextlib.suppress(OSError, TimeoutError):
            await send_cancel(conn.host, conn.port, conn.pid, conn.key)

    # ------------------------------------------------------------------ relay

    async def _serve(self, client: _Client, inp: _In, reader: Any, writer: Any) -> None:
        if client.database in ADMIN_DATABASES:
            await self.admin.serve(inp, reader, writer)
            return
        pool = self.pools[client.database]
        relay = client.relay
        idle_limit = self.limits.idle_timeout
        write_timeout = self.limits.write_timeout
        data = inp.take()
        while True:
            if not data:
                self._release_held(client)
                if client.lease is not None:
                    try:  # idle holding a server session (in a transaction): bounded
                        async with asyncio.timeout(idle_limit):
                            data = await reader.read(_READ)
                    except TimeoutError:
                        text = "terminating connection due to idle-in-transaction timeout"
                        self._refuse(writer, "25P03", text)
                        return
                else:
                    data = await reader.read(_READ)
                if not data:
                    return
                self.bytes_received += len(data)
            client.busy = True
            has_messages = relay.feed_client(data)
            data = b""
            if not has_messages:
                continue
            lease = client.lease
            if lease is None and relay.only_terminate:
                return  # a goodbye needs no server session
            if lease is None and relay.local_only:  # LISTEN/UNLISTEN: no session needed
                relay.route(None)
                await self._apply_listens(client)
                self._write(client, bytes(relay.to_client))
                relay.to_client.clear()
                await self._drain(client, writer, write_timeout)
                continue
            if lease is None:
                try:
                    lease = await pool.acquire_session()
                except AcquireTimeout as exc:
                    self._refuse(writer, "53300", f"no server connection available: {exc}")
                    return
                except (ConnectFailed, PoolError) as exc:
                    self._refuse(writer, "08006", f"cannot reach the database: {exc}")
                    return
                client.lease = lease
                self.leases += 1
            conn = lease.connection
            out = relay.route(conn)
            if relay.listen_changes:
                await self._apply_listens(client)
            if relay.to_client:
                self._write(client, bytes(relay.to_client))
                relay.to_client.clear()
            if out:
                conn.writer.write(out)
            if relay.awaiting_server:
                await self._pump(client, conn, writer, write_timeout)
            if relay.listen_changes:  # made at a COMMIT
                await self._apply_listens(client)
            await self._drain(client, writer, write_timeout)
            if relay.terminated:
                return
            if relay.releasable:
                client.lease = None
                await pool.release(lease)

    async def _pump(
        self, client: _Client, conn: PgConnection, writer: Any, write_timeout: float
    ) -> None:
        """Relay server replies until every pending one arrived (or COPY IN starts)."""
        relay = client.relay
        reader = conn.reader
        while relay.awaiting_server:
            chunk = await reader.read(_READ)
            if not chunk:
                conn.writer.close()
                raise _ServerLost
            out = relay.feed_server(chunk)
            if relay.listen_changes:  # listening before the client hears it is
                await self._apply_listens(client)
            if out:
                self._write(client, out)
                if relay.awaiting_server:
                    await self._drain(client, writer, write_timeout)

    def _write(self, client: _Client, data: bytes) -> None:
        client.writer.write(data)
        client.unflushed += len(data)
        self.bytes_sent += len(data)

    # ---------------------------------------------------------- LISTEN/NOTIFY

    async def _apply_listens(self, client: _Client) -> None:
        changes, client.relay.listen_changes = client.relay.listen_changes, []
        listener = self.listeners.get(client.database)
        if listener is None:
            if all(verb == "unlisten" for verb, _ in changes):
                return
            listener = DatabaseListener(
                client.database, self.database_configs[client.database], self._deliver
            )
            self.listeners[client.database] = listener
        await listener.change(client.pid, changes)

    def _deliver(self, listeners: frozenset[Hashable], note: bytes) -> None:
        """A notification for every client in ``listeners``: queued for the client,
        written by its flusher while the client waits for its next message."""
        limit = self.config.max_notification_bytes
        for pid in listeners:
            client = self._clients.get(pid) if isinstance(pid, int) else None
            if client is None:
                continue
            client.held.append(note)
            client.held_bytes += len(note)
            if client.held_bytes > limit:
                self._overflow(client)
            elif not client.busy:
                self._flush_notifications(client)

    def _release_held(self, client: _Client) -> None:
        """The client's reply is complete: its notifications may be written again."""
        client.busy = False
        self._flush_notifications(client)

    def _flush_notifications(self, client: _Client) -> None:
        if client.held and not client.busy and client.flusher is None:
            client.flusher = asyncio.create_task(self._flush(client))

    async def _flush(self, client: _Client) -> None:
        """Write the queued notifications, then wait for the client to take them;
        they count against its limit until it has. A reply to the client under way
        stops it (the relay loop starts it again after the reply)."""
        try:
            while client.held and not client.busy and client.pid in self._clients:
                notes = list(client.held)
                client.held.clear()
                size = sum(map(len, notes))
                self._write(client, b"".join(notes))
                self.notifications_delivered += len(notes)
                try:
                    await client.writer.drain()
                except (ConnectionError, OSError):
                    return
                client.held_bytes -= size
        finally:
            client.flusher = None

    def _overflow(self, client: _Client) -> None:
        """The client does not read its notifications: it is disconnected."""
        self.notification_overflows += 1
        client.held.clear()
        client.held_bytes = 0
        if not client.busy:
            self._refuse(
                client.writer,
                "53400",
                "terminating connection: more than "
                f"{self.config.max_notification_bytes} bytes of notifications not read",
            )
        self._clients.pop(client.pid, None)
        if client.task is not None:
            client.task.cancel()

    @staticmethod
    async def _drain(client: _Client, writer: Any, write_timeout: float) -> None:
        """Wait (at most ``write_timeout``) for the client to take its replies, once
        ``_DRAIN_AFTER`` bytes were written since the last wait: what a client does
        not read stays bounded without a wait per reply."""
        transport = getattr(writer, "transport", None)
        if transport is not None and not transport.get_write_buffer_size():
            client.unflushed = 0  # all written already (an asyncio stream)
            return
        if client.unflushed < _DRAIN_AFTER:
            return
        client.unflushed = 0
        async with asyncio.timeout(write_timeout):
            await writer.drain()

    async def _give_back(self, client: _Client, *, abandon: bool) -> None:
        lease, client.lease = client.lease, None
        if lease is None:
            return
        conn = lease.connection
        busy = not client.relay.idle or conn.is_closed()
        if abandon and conn.status != b"I":
            self.transactions_abandoned += 1
        pool = self.pools.get(client.database)
        if pool is None:
            conn.terminate()
            return
        with contextlib.suppress(Exception):
            await asyncio.shield(pool.release(lease, discard=busy))

    # -------------------------------------------------------------- statistics

    def clients(self) -> list[_Client]:
        return list(self._clients.values())

    def statistics(self) -> PostgresFrontDoorStats:
        return PostgresFrontDoorStats(
            port=self.port,
            clients_connected=len(self._clients),
            clients_total=self.clients_total,
            clients_rejected=self.clients_rejected,
            auth_failures=self.auth_failures,
            cancel_requests=self.cancel_requests,
            leases=self.leases,
            clients_active=sum(1 for c in self._clients.values() if c.lease is not None),
            transactions_abandoned=self.transactions_abandoned,
            errors=dict(self.errors),
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
            prepared_statements=sum(len(c.relay.statements) for c in self._clients.values()),
            listeners=sum(lst.registry.listener_count() for lst in self.listeners.values()),
            listen_channels=sum(len(lst.registry.channels) for lst in self.listeners.values()),
            listen_connections=sum(1 for lst in self.listeners.values() if lst.connected),
            notifications_received=sum(
                lst.notifications_received for lst in self.listeners.values()
            ),
            notifications_delivered=self.notifications_delivered,
            notification_overflows=self.notification_overflows,
            databases={
                name: msgspec.convert(pool.statistics(), DatabaseStats, from_attributes=True)
                for name, pool in self.pools.items()
            },
        )


def _unread(writer: Any) -> int:
    """Bytes written to a client that it has not taken yet (a socket's write buffer,
    or the outbound buffer of a virtual network stream)."""
    transport = getattr(writer, "transport", None)
    if transport is not None:
        return int(transport.get_write_buffer_size())
    end = getattr(writer, "end", None)
    return int(getattr(end, "outbound_buffered", 0))


class _ServerLost(Exception):
    """The server session closed under a client."""
