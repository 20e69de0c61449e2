"""Client authentication for the dbpool service.

Clients that come from outside the workload (through an ingress port, or a
real socket when the service listens on one) must prove they know a shared
secret before any database work. The proof is an HMAC, so the secret never
crosses the wire:

    server -> client   challenge   nonce: 32 random bytes (new per connection)
    client -> server   auth        proof = HMAC-SHA256(secret, b"fabric-dbpool-auth:" + nonce)

The server compares proofs in constant time (`hmac.compare_digest`).
Peers inside the workload (a component, another service) are trusted by
default (`trust_internal`). The secret comes from an environment variable
or a file named in the configuration; the configuration itself holds only
those names, and `Secret` never shows its value in a repr or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import msgspec

__all__ = [
    "AUTH_CONTEXT",
    "METHOD",
    "AuthConfig",
    "AuthError",
    "Authenticator",
    "Secret",
    "proof",
]

METHOD = "hmac-sha256"
AUTH_CONTEXT = b"fabric-dbpool-auth:"
NONCE_SIZE = 32


class AuthError(ValueError):
    """The authentication configuration cannot be used (no secret, unreadable file)."""


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``auth = { secret_env = "DBPOOL_SECRET" }`` or ``{ secret_file = "..." }``."""

    #: name of an environment variable holding the secret
    secret_env: str | None = None
    #: path of a file holding the secret (surrounding whitespace is stripped)
    secret_file: str | None = None
    #: peers inside the workload need no secret; False requires it from everyone
    trust_internal: bool = True

    def __post_init__(self) -> None:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("auth needs exactly one of secret_env or secret_file")
        if self.secret_env is not None and not self.secret_env:
            raise ValueError("auth.secret_env must not be empty")
        if self.secret_file is not None and not self.secret_file:
            raise ValueError("auth.secret_file must not be empty")


class Secret:
    """A shared secret; its value is never part of a repr or str."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not value:
            raise AuthError("the dbpool secret is empty")
        self._value = value

    @classmethod
    def load(cls, config: AuthConfig) -> Secret:
        if config.secret_env is not None:
            value = os.environ.get(config.secret_env)
            if value is None:
                raise AuthError(f"environment variable {config.secret_env} is not set")
            return cls(value.strip().encode())
        assert config.secret_file is not None
        try:
            data = Path(config.secret_file).read_bytes()
        except OSError as exc:
            raise AuthError(
                f"cannot read secret file {config.secret_file}: {exc.strerror}"
            ) from None
        return cls(data.strip())

    def proof(self, nonce: bytes) -> bytes:
        return proof(self._value, nonce)

    def __repr__(self) -> str:
        return "<Secret ***>"

    __str__ = __repr__


def proof(secret: bytes, nonce: bytes) -> bytes:
    """What a client sends in `auth` for ``nonce``."""
    return hmac.new(secret, AUTH_CONTEXT + nonce, hashlib.sha256).digest()


class Authenticator:
    """The server's side: who must authenticate, challenges, verification."""

    def __init__(self, secret: Secret, *, trust_internal: bool = True) -> None:
        self._secret = secret
        self.trust_internal = trust_internal

    @classmethod
    def from_config(cls, config: AuthConfig) -> Authenticator:
        return cls(Secret.load(config), trust_internal=config.trust_internal)

    def required(self, peer_external: object) -> bool:
        """Whether a client must authenticate. ``peer_external`` is the stream's
        ``get_extra_info("peer_external")``: False only for peers inside the
        workload's virtual network; None (a real socket) counts as outside."""
        return not (self.trust_internal and peer_external is False)

    @staticmethod
    def nonce() -> bytes:
        return secrets.token_bytes(NONCE_SIZE)

    def verify(self, nonce: bytes, method: str, client_proof: bytes) -> bool:
        expected = self._secret.proof(nonce)
        ok = hmac.compare_digest(expected, client_proof)
        return ok and method == METHOD

    def __repr__(self) -> str:
        return f"<Authenticator {METHOD} trust_internal={self.trust_internal}>"
