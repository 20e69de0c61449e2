"""fabric.net: the per-workload virtual loopback network.

Sans-IO sockets (`TcpSocket`, `UdpSocket`) whose methods map one-to-one to
the WIT `wasi:sockets` functions, in-memory pipes with backpressure, a
default-deny policy, egress/ingress bridges to real sockets, and an
asyncio-shaped API for native Python peers. See docs/network.md.
"""

from .address import IpAddress, IpAddressFamily, SocketAddress
from .bridge import IngressServer, splice
from .budget import SocketBudget
from .errors import (
    ErrorCode,
    NetError,
    NetTrap,
    SocketError,
    StreamClosed,
    error_code_from_oserror,
    oserror_from_error_code,
)
from .names import NameResolver, ResolveAddressStream
from .network import (
    GuestNetwork,
    GuestStatistics,
    IngressStatistics,
    NetworkCore,
    NetworkStatistics,
)
from .pipe import DEFAULT_HIGH_WATER, PipeEnd, PipeStatistics, pipe_pair
from .policy import (
    EgressRule,
    IngressRule,
    NetworkPolicy,
    Role,
    SocketAddrCheck,
    SocketAddrUse,
)
from .ports import EPHEMERAL_FIRST, EPHEMERAL_LAST, PortTable
from .readiness import Notifier, Pollable
from .streams import VirtualServer, VirtualStreamReader, VirtualStreamWriter
from .tcp import (
    ConnectAttempt,
    ShutdownType,
    TcpInputStream,
    TcpOptions,
    TcpOutputStream,
    TcpSocket,
    TcpState,
)
from .udp import (
    IncomingDatagram,
    IncomingDatagramStream,
    OutgoingDatagram,
    OutgoingDatagramStream,
    UdpSocket,
    UdpState,
)
from .virtual import VirtualNetwork

__all__ = [
    "DEFAULT_HIGH_WATER",
    "EPHEMERAL_FIRST",
    "EPHEMERAL_LAST",
    "ConnectAttempt",
    "EgressRule",
    "ErrorCode",
    "GuestNetwork",
    "GuestStatistics",
    "IncomingDatagram",
    "IncomingDatagramStream",
    "IngressRule",
    "IngressServer",
    "IngressStatistics",
    "IpAddress",
    "IpAddressFamily",
    "NameResolver",
    "NetError",
    "NetTrap",
    "NetworkCore",
    "NetworkPolicy",
    "NetworkStatistics",
    "Notifier",
    "OutgoingDatagram",
    "OutgoingDatagramStream",
    "PipeEnd",
    "PipeStatistics",
    "Pollable",
    "PortTable",
    "ResolveAddressStream",
    "Role",
    "ShutdownType",
    "SocketAddrCheck",
    "SocketAddrUse",
    "SocketAddress",
    "SocketBudget",
    "SocketError",
    "StreamClosed",
    "TcpInputStream",
    "TcpOptions",
    "TcpOutputStream",
    "TcpSocket",
    "TcpState",
    "UdpSocket",
    "UdpState",
    "VirtualNetwork",
    "VirtualServer",
    "VirtualStreamReader",
    "VirtualStreamWriter",
    "error_code_from_oserror",
    "oserror_from_error_code",
    "pipe_pair",
    "splice",
]
