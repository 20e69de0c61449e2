"""The startup packets of the PostgreSQL front door: a login (encryption refused,
protocol version negotiated, the user, database and startup parameters checked,
SCRAM-SHA-256 or trust) that ends with the client registered and its parameters
sent, or a CancelRequest forwarded to the server session the client holds.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
from typing import Any

from pools import PgWirePool, PoolError, send_cancel

from .client import BufferedReader, Client, DoorBase
from .config import ADMIN_DATABASES
from .relay import ProtocolViolation, Relay
from .scram import MECHANISM, ScramError, ScramServer
from .wire import (
    I32,
    BadStartup,
    CancelRequest,
    EncryptionRequest,
    Startup,
    auth_request,
    backend_key_data,
    negotiate_protocol_version,
    parameter_status,
    parse_startup,
    ready_for_query,
    startup_length,
)

__all__ = ["Login"]

_AUTH_MESSAGE_LIMIT = 8192

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


class Login(DoorBase):
    """The front door's startup handshake and cancel requests."""

    async def _handshake(self, inp: BufferedReader, writer: Any) -> Client | None:
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
        client = Client(pid, key, user_name, database, relay, writer)
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

    async def _authenticate(self, inp: BufferedReader, writer: Any, name: str, method: str) -> None:
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
