"""The server side of SCRAM-SHA-256 (RFC 5802 / RFC 7677), as PostgreSQL runs it.
Sans-IO. No channel binding (the front door refuses TLS, so clients send ``n,,``
or ``y,,``).

The password is turned into a verifier once (`ScramVerifier.from_password`, the
4096 PBKDF2 rounds PostgreSQL uses); each client then costs a few HMACs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["MECHANISM", "ScramError", "ScramServer", "ScramVerifier"]

MECHANISM = "SCRAM-SHA-256"
ITERATIONS = 4096


class ScramError(Exception):
    """The exchange failed: a malformed message, or the proof does not match."""


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


class ScramVerifier:
    """What the server keeps of a password: salt, rounds, StoredKey, ServerKey."""

    __slots__ = ("iterations", "salt", "server_key", "stored_key")

    def __init__(self, salt: bytes, iterations: int, stored_key: bytes, server_key: bytes) -> None:
        self.salt = salt
        self.iterations = iterations
        self.stored_key = stored_key
        self.server_key = server_key

    @classmethod
    def from_password(
        cls, password: str, iterations: int = ITERATIONS, salt: bytes | None = None
    ) -> ScramVerifier:
        salt = salt or secrets.token_bytes(16)
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        stored = hashlib.sha256(_hmac(salted, b"Client Key")).digest()
        return cls(salt, iterations, stored, _hmac(salted, b"Server Key"))

    def __repr__(self) -> str:
        return f"<ScramVerifier iterations={self.iterations}>"


class ScramServer:
    """One exchange: ``first(client_first) -> server_first``, then
    ``final(client_final) -> server_final`` (raises `ScramError` on a wrong proof)."""

    def __init__(self, verifier: ScramVerifier, nonce: str | None = None) -> None:
        self._verifier = verifier
        self._server_nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode()
        self._first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._gs2 = ""

    def first(self, client_first: bytes) -> bytes:
        try:
            text = client_first.decode()
        except UnicodeDecodeError:
            raise ScramError("malformed SCRAM message: not UTF-8") from None
        parts = text.split(",", 2)
        if len(parts) != 3 or parts[0] not in ("n", "y") or parts[1] != "":
            raise ScramError("malformed SCRAM message: unsupported channel binding")
        self._gs2 = f"{parts[0]},,"
        self._first_bare = parts[2]
        attrs = _attrs(self._first_bare)
        client_nonce = attrs.get("r", "")
        if not client_nonce or "m" in attrs:
            raise ScramError("malformed SCRAM message: no client nonce")
        self._nonce = client_nonce + self._server_nonce
        salt = base64.b64encode(self._verifier.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self._verifier.iterations}"
        return self._server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        if not self._server_first:
            raise ScramError("SCRAM final message before the first")
        try:
            text = client_final.decode()
        except UnicodeDecodeError:
            raise ScramError("malformed SCRAM message: not UTF-8") from None
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            raise ScramError("malformed SCRAM message: no proof")
        attrs = _attrs(without_proof)
        binding = base64.b64encode(self._gs2.encode()).decode()
        if attrs.get("c") != binding:
            raise ScramError("malformed SCRAM message: channel binding does not match")
        if attrs.get("r") != self._nonce:
            raise ScramError("malformed SCRAM message: nonce does not match")
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError:
            raise ScramError("malformed SCRAM message: proof is not base64") from None
        auth = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        signature = _hmac(self._verifier.stored_key, auth)
        if len(proof) != len(signature):
            raise ScramError("password authentication failed")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self._verifier.stored_key):
            raise ScramError("password authentication failed")
        server_signature = _hmac(self._verifier.server_key, auth)
        return b"v=" + base64.b64encode(server_signature)


def _attrs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        if len(part) >= 2 and part[1] == "=":
            out[part[0]] = part[2:]
    return out
