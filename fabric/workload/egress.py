"""Egress targets resolved once, when a workload is loaded.

A host name in an egress rule's real target (``to = "db.internal:5432"``, or
``dest`` without ``to``) is looked up once at load, not on every connect, so
DNS answers later cannot redirect a workload's connections; the rule then
names one address, and a refused connect reaches the guest as
``connection-refused`` (not an error about several addresses).  An IPv4
address is preferred when the name has one.
"""

from __future__ import annotations

import ipaddress
import socket

from .errors import WorkloadError

__all__ = ["EgressResolveError", "resolve_target"]


class EgressResolveError(WorkloadError):
    """The host name of an egress target does not resolve."""


def resolve_target(host: str, port: int) -> str:
    """The address ``host`` stands for (``host`` itself if it is an IP address)."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise EgressResolveError(
            f"egress target {host}:{port}: cannot resolve {host!r}: {reason}"
        ) from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:  # pragma: no cover - getaddrinfo raises instead
        raise EgressResolveError(f"egress target {host}:{port}: {host!r} has no address")
    v4 = [a for a in addresses if ":" not in a]
    return (v4 or addresses)[0]
