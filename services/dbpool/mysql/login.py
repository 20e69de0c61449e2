"""The login of a MySQL front door client: the greeting, TLS refused, the
authentication (mysql_native_password or caching_sha2_password fast auth, with an
auth switch when the client picked another plugin), the database checked, and the
client's character set turned into the SET NAMES its leases replay.
"""

from __future__ import annotations

import os

from .handshake import (
    CACHING_SHA2,
    NATIVE,
    HandshakeResponse,
    SslRequest,
    auth_switch,
    fast_auth_ok,
    greeting,
    parse_response,
    verify,
)
from .session_base import Refusal, SessionBase
from .statements import SetNames
from .wire import MalformedPacket, ok_packet

__all__ = ["Login", "names_for"]


class Login(SessionBase):
    """A session's handshake with its client."""

    async def _login(self) -> bool:
        refusal = self.door.admission(self.external)
        nonce = bytes(b % 127 + 1 for b in os.urandom(20))  # no NUL inside
        plugin = self._greeting_plugin()
        await self._send(
            greeting(self.door.next_connection_id(), nonce, self.config.server_version, plugin)
        )
        packet = await self._read_packet()
        if packet is None:
            return False
        seq, body = packet
        try:
            response = parse_response(body)
        except MalformedPacket as exc:
            await self._refuse(seq + 1, Refusal(1043, "08S01", f"Bad handshake: {exc}"))
            return False
        if isinstance(response, SslRequest):
            await self._refuse(
                seq + 1,
                Refusal(
                    1043,
                    "08S01",
                    "Bad handshake: TLS is not supported by this server; connect without TLS",
                ),
            )
            return False
        if refusal is not None:
            await self._refuse(seq + 1, refusal)
            return False
        return await self._authenticate(seq + 1, response, nonce)

    def _greeting_plugin(self) -> str:
        users = self.config.users.values()
        if users and all(u.plugin == CACHING_SHA2 for u in users):
            return CACHING_SHA2
        return NATIVE

    async def _authenticate(self, seq: int, response: HandshakeResponse, nonce: bytes) -> bool:
        user = self.config.users.get(response.user)
        proof = response.auth_response
        if user is not None and response.plugin != user.plugin:
            await self._send(auth_switch(seq, user.plugin, nonce))
            packet = await self._read_packet()
            if packet is None:
                return False
            seq, proof = packet[0] + 1, packet[1]
        if user is None or not verify(user.plugin, user.password, nonce, proof):
            self.door.note_auth_failure()
            using = "YES" if proof not in (b"", b"\0") else "NO"
            await self._refuse(
                seq,
                Refusal(
                    1045,
                    "28000",
                    f"Access denied for user '{response.user}' (using password: {using})",
                ),
            )
            return False
        self._allowed = self.door.allowed_databases(user)
        database = response.database or user.database or (self._allowed[0] if self._allowed else "")
        refusal = self._database_refusal(response.user, database)
        if refusal is not None:
            await self._refuse(seq, refusal)
            return False
        self.user = response.user
        self._select(database)
        self.names = names_for(response.collation)
        reply = b""
        if user.plugin == CACHING_SHA2 and proof not in (b"", b"\0"):
            reply = fast_auth_ok(seq)  # and the OK in the same write: one wake-up
            seq += 1
        self.accepted = True
        await self._send(reply + ok_packet(seq, self._status()))
        return True


def names_for(collation: int) -> SetNames | None:
    """The SET NAMES a client's handshake collation needs (None: the pool's default)."""
    from pymysql.charset import charset_by_id

    try:
        charset = charset_by_id(collation)
    except KeyError:
        return None
    if charset.name == "utf8mb4":
        return None
    return SetNames(charset.name, None)
