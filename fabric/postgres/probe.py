"""Network helpers: free ports, probing for a PostgreSQL server, DSNs."""

from __future__ import annotations

import socket
import struct
from urllib.parse import quote

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)

# ------------------------------------------------------------ network helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def probe_postgres(host: str = "127.0.0.1", port: int = 5432, timeout: float = 1.0) -> bool:
    """Whether a PostgreSQL server answers at ``host:port``.

    Sends an ``SSLRequest`` and expects the one-byte answer every server gives
    (``S`` or ``N``) before any authentication, so no credentials are needed.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_SSL_REQUEST)
            answer = sock.recv(1)
    except OSError:
        return False
    return answer in (b"S", b"N")


def make_dsn(host: str, port: int, user: str, password: str | None, database: str) -> str:
    """A ``postgresql://`` URL with user and password quoted."""
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    return f"postgresql://{auth}@{host}:{port}/{quote(database, safe='')}"
