"""Network policy of one workload: who may bind, connect and resolve what.

Default deny. The rules, per guest role:

- loopback (127.0.0.0/8, ::1, and the unspecified address, which means the
  same loopback): everyone may connect and send datagrams;
- `service` guests may bind any loopback port;
- `component` guests may only bind port 0 (an ephemeral port), and that
  port is private to the guest instance: nobody else can reach it. This is
  what CPython's asyncio needs for its self-pipe (bind port 0, listen,
  connect to itself) in a runtime without `socketpair`;
- any other destination is refused with `access-denied` unless an
  `EgressRule` maps it (TCP only) to a real host address. `access-denied`
  rather than `remote-unreachable` because it is a policy decision, and it
  is what wasmtime's own `socket_addr_check` hook gives a guest.

Each guest gets a `SocketAddrCheck`, a plain `(address, use) -> bool`
callable as in wasmtime's `SocketAddrCheck`; the network calls it before
every bind, connect and datagram send, and logs refusals.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable

import msgspec

from .address import IpAddress, SocketAddress
from .errors import SocketError
from .names import normalize_name

__all__ = [
    "DEFAULT_MAX_INGRESS_CONNECTIONS",
    "DEFAULT_MAX_SOCKETS",
    "EgressRule",
    "IngressRule",
    "NetworkPolicy",
    "Role",
    "SocketAddrCheck",
    "SocketAddrUse",
    "allow_all",
    "role_check",
]

DEFAULT_MAX_SOCKETS = 1024  # per guest instance (each `attach`), not per workload
DEFAULT_MAX_INGRESS_CONNECTIONS = 512  # per ingress rule


class Role(enum.Enum):
    """What a guest is in its workload."""

    SERVICE = "service"
    COMPONENT = "component"


class SocketAddrUse(enum.Enum):
    """Why an address is checked (wasmtime's `SocketAddrUse`)."""

    TCP_BIND = "tcp-bind"
    TCP_CONNECT = "tcp-connect"
    UDP_BIND = "udp-bind"
    UDP_CONNECT = "udp-connect"
    UDP_OUTGOING_DATAGRAM = "udp-outgoing-datagram"


SocketAddrCheck = Callable[[SocketAddress, SocketAddrUse], bool]


class EgressRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Guests connecting to `destination:port` reach the real `target_host:target_port`.

    `destination` is an IP literal or a host name. A name becomes resolvable
    inside the workload (to a synthetic address in 198.18.0.0/15 that only
    this rule uses), so `connect(("mariadb", 3306))` works in a guest.
    """

    destination: str
    port: int
    target_host: str
    target_port: int

    def __post_init__(self) -> None:
        if not 0 < self.port <= 0xFFFF or not 0 < self.target_port <= 0xFFFF:
            raise ValueError("egress ports must be 1-65535")
        if not self.destination or not self.target_host:
            raise ValueError("egress destination and target_host must not be empty")
        if self.destination_ip is None:
            _check_name(self.destination)

    @property
    def destination_ip(self) -> IpAddress | None:
        """The destination as an IP address, or None when it is a name."""
        try:
            return IpAddress.parse(self.destination)
        except ValueError:
            return None


class IngressRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Expose the virtual `port` on the real `host:host_port` (0: any free port).

    At most `max_connections` real clients are forwarded at once; more are
    closed (reset) as soon as they connect. The rule's connections have a
    socket budget of their own, so they never use up the room of the
    workload's services and components. With `reuse_port` the listener is
    opened with `SO_REUSEPORT`, so several processes (the workers of
    `fabric run --workers N`) share the host port and the kernel spreads
    connections between them.

    With `direct` (the default), a connection to a port a native service
    listens on (`VirtualNetwork.start_server`) is handed to that service
    as the real socket's asyncio streams instead of being spliced into a
    virtual pipe; `direct=False` always splices.
    """

    port: int
    host_port: int = 0
    host: str = "127.0.0.1"
    max_connections: int = DEFAULT_MAX_INGRESS_CONNECTIONS
    reuse_port: bool = False
    direct: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.port <= 0xFFFF or not 0 <= self.host_port <= 0xFFFF:
            raise ValueError("ingress port must be 1-65535, host_port 0-65535")
        if not 0 < self.max_connections <= 1_000_000:
            raise ValueError("ingress max_connections must be 1-1000000")
        ipaddress.ip_address(self.host)


class NetworkPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Network policy of a workload (default deny)."""

    egress: tuple[EgressRule, ...] = ()
    ingress: tuple[IngressRule, ...] = ()
    # Extra names resolvable inside the workload: name -> IP literal
    # (for example {"dbpool": "127.0.0.1"}).
    names: dict[str, str] = msgspec.field(default_factory=dict)
    allow_dns: bool = False  # resolve other names with the host's getaddrinfo
    allow_udp: bool = True
    max_sockets: int = DEFAULT_MAX_SOCKETS  # per guest instance
    egress_connect_timeout: float = 10.0
    high_water: int = 256 * 1024  # bytes buffered per direction of a connection

    def __post_init__(self) -> None:
        if self.max_sockets < 1:
            raise ValueError("max_sockets must be at least 1")
        if self.high_water < 1:
            raise ValueError("high_water must be positive")
        for name, literal in self.names.items():
            _check_name(name)
            IpAddress.parse(literal)


def _check_name(name: str) -> None:
    try:
        normalize_name(name)
    except SocketError as exc:
        raise ValueError(f"bad host name {name!r}") from exc


def is_local(addr: SocketAddress) -> bool:
    """Loopback or unspecified: this workload's own loopback."""
    return addr.is_loopback or addr.is_unspecified


def role_check(role: Role, egress: Callable[[SocketAddress], object | None]) -> SocketAddrCheck:
    """The default-deny check of a guest with `role`.

    `egress(addr)` returns the egress route for a non-local address, or None.
    """

    def check(addr: SocketAddress, use: SocketAddrUse) -> bool:
        local = is_local(addr)
        if use in (SocketAddrUse.TCP_BIND, SocketAddrUse.UDP_BIND):
            if role is Role.SERVICE:
                return True
            return addr.port == 0 and local
        if local:
            return True
        return use is SocketAddrUse.TCP_CONNECT and egress(addr) is not None

    return check


def allow_all(addr: SocketAddress, use: SocketAddrUse) -> bool:
    """A check that allows everything (tests, trusted native code)."""
    return True
