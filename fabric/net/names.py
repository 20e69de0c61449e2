"""`ip-name-lookup` on the virtual network.

- IP literals resolve to themselves (also when nothing else may be
  resolved: wasi-libc's `getaddrinfo("127.0.0.1")` asks, and CPython's
  `create_connection`, asyncio and PyMySQL break when it fails);
- `localhost` and `*.localhost` resolve to 127.0.0.1 then ::1;
- names the workload configures resolve to their addresses: policy `names`,
  names added with `VirtualNetwork.add_name`, and the host names of egress
  rules, each of which gets a synthetic address in 198.18.0.0/15 (the
  benchmarking range, never routed) that only its egress rules use;
- any other name is `name-unresolvable`, unless the policy allows DNS, in
  which case the host's resolver answers (`loop.getaddrinfo`).

Syntax is checked as wasmtime checks it: a bad name is `invalid-argument`,
raised by `resolve_addresses` itself; resolution errors come out of
`resolve_next_address`, which raises `would-block` until the answer is in.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket

from .address import IpAddress
from .errors import ErrorCode, SocketError, error_code_from_oserror
from .readiness import Notifier, wait_until

__all__ = ["SYNTHETIC_NETWORK", "NameResolver", "ResolveAddressStream", "normalize_name"]

SYNTHETIC_NETWORK = ipaddress.IPv4Network("198.18.0.0/15")
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_LOCALHOST = (IpAddress.ipv4(127, 0, 0, 1), IpAddress.parse("::1"))


def normalize_name(name: str) -> str:
    """Lower-case ASCII (IDNA) form of a host name; `invalid-argument` if it is not one."""
    text = name.strip()
    if text.endswith(".") and len(text) > 1:
        text = text[:-1]
    try:
        ascii_name = text.encode("idna").decode("ascii").lower()
    except (UnicodeError, ValueError) as exc:
        raise SocketError(ErrorCode.INVALID_ARGUMENT, f"bad host name {name!r}") from exc
    if not ascii_name or len(ascii_name) > 253:
        raise SocketError(ErrorCode.INVALID_ARGUMENT, f"bad host name {name!r}")
    if not all(_LABEL.match(label) for label in ascii_name.split(".")):
        raise SocketError(ErrorCode.INVALID_ARGUMENT, f"bad host name {name!r}")
    return ascii_name


class ResolveAddressStream:
    """`resolve-address-stream`: the answer to one lookup, maybe still pending."""

    def __init__(self) -> None:
        self._addresses: list[IpAddress] | None = None
        self._error: SocketError | None = None
        self._notifier = Notifier()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def resolved(cls, addresses: list[IpAddress]) -> ResolveAddressStream:
        stream = cls()
        stream._addresses = list(addresses)
        return stream

    def _finish(self, addresses: list[IpAddress] | None, error: SocketError | None) -> None:
        self._addresses, self._error = addresses, error
        self._notifier.notify()

    def resolve_next_address(self) -> IpAddress | None:
        """The next address, None when exhausted; `would-block` while pending."""
        if self._error is not None:
            raise self._error
        if self._addresses is None:
            raise SocketError(ErrorCode.WOULD_BLOCK, "lookup in progress")
        return self._addresses.pop(0) if self._addresses else None

    def ready(self) -> bool:
        return self._addresses is not None or self._error is not None or self._closed

    async def wait_ready(self) -> None:
        await wait_until(self.ready, self._notifier)

    def close(self) -> None:
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._notifier.notify()

    def __repr__(self) -> str:
        if self._error is not None:
            return f"<ResolveAddressStream error={self._error.code.value}>"
        if self._addresses is None:
            return "<ResolveAddressStream pending>"
        return f"<ResolveAddressStream remaining={len(self._addresses)}>"


class NameResolver:
    """Name table of one workload, plus optional host DNS."""

    def __init__(self, *, allow_dns: bool = False) -> None:
        self.allow_dns = allow_dns
        self._names: dict[str, list[IpAddress]] = {}
        self._next_synthetic = 1
        self.lookups = 0
        self.failures = 0

    def add(self, name: str, addresses: list[IpAddress]) -> None:
        """Make `name` resolve to `addresses` (in that order)."""
        self._names[normalize_name(name)] = list(addresses)

    def synthetic(self, name: str) -> IpAddress:
        """The synthetic address of `name`, allocated on first use."""
        key = normalize_name(name)
        if key in self._names:
            return self._names[key][0]
        if self._next_synthetic >= SYNTHETIC_NETWORK.num_addresses - 1:
            raise ValueError("synthetic address range exhausted")
        ip = IpAddress.from_ip(SYNTHETIC_NETWORK[self._next_synthetic])
        self._next_synthetic += 1
        self._names[key] = [ip]
        return ip

    def names(self) -> dict[str, list[IpAddress]]:
        return {name: list(addrs) for name, addrs in self._names.items()}

    def lookup_static(self, name: str) -> list[IpAddress] | None:
        """Answer from literals, localhost and the name table; None if unknown.

        Raises `invalid-argument` for a syntactically bad name.
        """
        text = name.strip()
        try:
            return [IpAddress.parse(text)]
        except ValueError:
            pass
        key = normalize_name(text)
        if key == "localhost" or key.endswith(".localhost"):
            return list(_LOCALHOST)
        found = self._names.get(key)
        return list(found) if found is not None else None

    def resolve(self, name: str) -> ResolveAddressStream:
        """Start a lookup (`resolve-addresses`)."""
        self.lookups += 1
        found = self.lookup_static(name)
        if found is not None:
            return ResolveAddressStream.resolved(found)
        stream = ResolveAddressStream()
        if not self.allow_dns:
            self.failures += 1
            stream._finish(None, SocketError(ErrorCode.NAME_UNRESOLVABLE, name))
            return stream
        stream._task = asyncio.get_running_loop().create_task(
            self._dns(normalize_name(name), stream)
        )
        return stream

    async def _dns(self, name: str, stream: ResolveAddressStream) -> None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            self.failures += 1
            stream._finish(None, SocketError(error_code_from_oserror(exc), name))
            return
        seen: list[IpAddress] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip = IpAddress.parse(str(sockaddr[0]).split("%", 1)[0])
            if ip.is_ipv4_mapped:
                ip = IpAddress.parse(str(ip.to_ip().ipv4_mapped))  # type: ignore[union-attr]
            if ip not in seen:
                seen.append(ip)
        if not seen:
            self.failures += 1
            stream._finish(None, SocketError(ErrorCode.NAME_UNRESOLVABLE, name))
        else:
            stream._finish(seen, None)

    def __repr__(self) -> str:
        return (
            f"<NameResolver names={len(self._names)} dns={self.allow_dns}"
            f" lookups={self.lookups} failures={self.failures}>"
        )
