"""Addresses in the shape of the WIT `ip-address` / `ip-socket-address` variants.

An IPv4 address is a 4-tuple of octets, an IPv6 address an 8-tuple of u16
segments, exactly as the WIT declares them, so the binding converts a WIT
value with no arithmetic. The validation helpers reproduce wasmtime's
`sockets/util.rs` (`is_valid_address_family`, `is_valid_remote_address`,
`is_valid_unicast_address`).
"""

from __future__ import annotations

import enum
import ipaddress
from typing import Any

import msgspec

__all__ = [
    "IpAddress",
    "IpAddressFamily",
    "SocketAddress",
    "is_valid_address_family",
    "is_valid_remote_address",
    "is_valid_unicast_address",
]

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address


class IpAddressFamily(enum.Enum):
    """`wasi:sockets/network.ip-address-family`."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"

    # Members are singletons compared by identity: hash them by identity too,
    # in C, rather than by Enum's Python-level hash of the name (addresses and
    # socket states are dictionary keys on every connect).
    __hash__ = object.__hash__


def _to_tuple(ip: IPv4 | IPv6) -> tuple[int, ...]:
    raw = ip.packed
    if ip.version == 4:
        return tuple(raw)
    return tuple(int.from_bytes(raw[i : i + 2], "big") for i in range(0, 16, 2))


# Address tuples already found valid, with their family (the width tells it):
# the same few addresses are built over and over (loopback, unspecified, the
# addresses of a workload's services). Bounded: cleared when it fills up.
_VALID: dict[tuple[int, ...], IpAddressFamily] = {}
_VALID_MAX = 4096


def _check_tuple(family: IpAddressFamily, address: tuple[int, ...]) -> None:
    if type(address) is tuple and _VALID.get(address) is family:
        return
    width, limit = (4, 0xFF) if family is IpAddressFamily.IPV4 else (8, 0xFFFF)
    if len(address) != width or min(address) < 0 or max(address) > limit:
        raise ValueError(f"bad {family.value} address {address!r}")
    if type(address) is tuple:
        if len(_VALID) >= _VALID_MAX:
            _VALID.clear()
        _VALID[address] = family


# The text of an address tuple (IPv4 has 4 items, IPv6 8), as `ipaddress`
# writes it; bounded like `_VALID`.
_TEXT: dict[tuple[int, ...], str] = {}


def _text(address: tuple[int, ...]) -> str:
    text = _TEXT.get(address)
    if text is None:
        if len(address) == 4:
            text = str(IPv4(bytes(address)))
        else:
            text = str(IPv6(b"".join(x.to_bytes(2, "big") for x in address)))
        if len(_TEXT) >= _VALID_MAX:
            _TEXT.clear()
        _TEXT[address] = text
    return text


def _is_loopback(family: IpAddressFamily, address: tuple[int, ...]) -> bool:
    if family is IpAddressFamily.IPV4:
        return address[0] == 127
    return address == (0, 0, 0, 0, 0, 0, 0, 1)


def _is_ipv4_mapped(family: IpAddressFamily, address: tuple[int, ...]) -> bool:
    return family is IpAddressFamily.IPV6 and address[:6] == (0, 0, 0, 0, 0, 0xFFFF)


class IpAddress(msgspec.Struct, frozen=True):
    """`ip-address`: `ipv4(tuple<u8 x4>)` or `ipv6(tuple<u16 x8>)`."""

    family: IpAddressFamily
    address: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_tuple(self.family, self.address)

    @classmethod
    def ipv4(cls, a: int, b: int, c: int, d: int) -> IpAddress:
        return cls(IpAddressFamily.IPV4, (a, b, c, d))

    @classmethod
    def from_ip(cls, ip: IPv4 | IPv6) -> IpAddress:
        family = IpAddressFamily.IPV4 if ip.version == 4 else IpAddressFamily.IPV6
        return cls(family, _to_tuple(ip))

    @classmethod
    def parse(cls, text: str) -> IpAddress:
        """Parse an IP literal (`ValueError` if it is not one); `[v6]` is accepted."""
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        return cls.from_ip(ipaddress.ip_address(text))

    @classmethod
    def loopback(cls, family: IpAddressFamily) -> IpAddress:
        return _LOOPBACK[family]

    @classmethod
    def unspecified(cls, family: IpAddressFamily) -> IpAddress:
        return _UNSPECIFIED[family]

    def to_ip(self) -> IPv4 | IPv6:
        if self.family is IpAddressFamily.IPV4:
            return IPv4(bytes(self.address))
        return IPv6(b"".join(x.to_bytes(2, "big") for x in self.address))

    @property
    def is_loopback(self) -> bool:
        return _is_loopback(self.family, self.address)

    @property
    def is_unspecified(self) -> bool:
        return not any(self.address)

    @property
    def is_ipv4_mapped(self) -> bool:
        return _is_ipv4_mapped(self.family, self.address)

    def __str__(self) -> str:
        return _text(self.address)


_LOOPBACK = {
    IpAddressFamily.IPV4: IpAddress(IpAddressFamily.IPV4, (127, 0, 0, 1)),
    IpAddressFamily.IPV6: IpAddress(IpAddressFamily.IPV6, (0, 0, 0, 0, 0, 0, 0, 1)),
}
_UNSPECIFIED = {
    IpAddressFamily.IPV4: IpAddress(IpAddressFamily.IPV4, (0, 0, 0, 0)),
    IpAddressFamily.IPV6: IpAddress(IpAddressFamily.IPV6, (0,) * 8),
}


class SocketAddress(msgspec.Struct, frozen=True):
    """`ip-socket-address`: family, address tuple, port; flow-info and scope-id for IPv6."""

    family: IpAddressFamily
    address: tuple[int, ...]
    port: int
    flow_info: int = 0
    scope_id: int = 0

    def __post_init__(self) -> None:
        address = self.address
        if type(address) is not tuple or _VALID.get(address) is not self.family:
            _check_tuple(self.family, address)
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"bad port {self.port!r}")

    @classmethod
    def ipv4(cls, address: tuple[int, int, int, int], port: int) -> SocketAddress:
        return cls(IpAddressFamily.IPV4, address, port)

    @classmethod
    def ipv6(
        cls,
        address: tuple[int, int, int, int, int, int, int, int],
        port: int,
        flow_info: int = 0,
        scope_id: int = 0,
    ) -> SocketAddress:
        return cls(IpAddressFamily.IPV6, address, port, flow_info, scope_id)

    @classmethod
    def of(cls, ip: IpAddress, port: int) -> SocketAddress:
        return cls(ip.family, ip.address, port)

    @classmethod
    def parse(cls, host: str, port: int) -> SocketAddress:
        """`SocketAddress.parse("127.0.0.1", 80)`; `host` must be an IP literal."""
        return cls.of(IpAddress.parse(host), port)

    @property
    def ip(self) -> IpAddress:
        return IpAddress(self.family, self.address)

    @property
    def host(self) -> str:
        return _text(self.address)

    @property
    def is_loopback(self) -> bool:
        address = self.address
        if self.family is IpAddressFamily.IPV4:
            return address[0] == 127
        return address == (0, 0, 0, 0, 0, 0, 0, 1)

    @property
    def is_unspecified(self) -> bool:
        return not any(self.address)

    @property
    def is_ipv4_mapped(self) -> bool:
        return _is_ipv4_mapped(self.family, self.address)

    def with_port(self, port: int) -> SocketAddress:
        return msgspec.structs.replace(self, port=port)

    def with_ip(self, ip: IpAddress) -> SocketAddress:
        return SocketAddress(ip.family, ip.address, self.port, self.flow_info, self.scope_id)

    def to_sockaddr(self) -> tuple[Any, ...]:
        """The tuple asyncio's `get_extra_info("peername")` gives for this address."""
        if self.family is IpAddressFamily.IPV4:
            return (_text(self.address), self.port)
        return (_text(self.address), self.port, self.flow_info, self.scope_id)

    def __str__(self) -> str:
        if self.family is IpAddressFamily.IPV4:
            return f"{self.host}:{self.port}"
        return f"[{self.host}]:{self.port}"


Addressish = IpAddress | SocketAddress


def _is_deprecated_ipv4_compatible(ip: Addressish) -> bool:
    return ip.address[:6] == (0, 0, 0, 0, 0, 0) and not ip.is_unspecified and not ip.is_loopback


def is_valid_address_family(ip: Addressish, family: IpAddressFamily) -> bool:
    """IPv4 on IPv4 sockets; IPv6 (not IPv4-mapped, not IPv4-compatible) on IPv6 sockets."""
    if ip.family is not family:
        return False
    if family is IpAddressFamily.IPV6:
        return not ip.is_ipv4_mapped and not _is_deprecated_ipv4_compatible(ip)
    return True


def _canonical(ip: Addressish) -> tuple[IpAddressFamily, tuple[int, ...]]:
    address = ip.address
    if ip.family is IpAddressFamily.IPV6 and address[:6] == (0, 0, 0, 0, 0, 0xFFFF):
        hi, lo = address[6], address[7]
        return IpAddressFamily.IPV4, (hi >> 8, hi & 0xFF, lo >> 8, lo & 0xFF)
    return ip.family, address


def is_valid_remote_address(addr: SocketAddress) -> bool:
    """Not the unspecified address, not port 0."""
    return any(_canonical(addr)[1]) and addr.port != 0


def is_valid_unicast_address(ip: Addressish) -> bool:
    """Not multicast, not the IPv4 broadcast address."""
    family, address = _canonical(ip)
    if family is IpAddressFamily.IPV4:
        return not (224 <= address[0] <= 239) and address != (255, 255, 255, 255)
    return address[0] >> 8 != 0xFF
