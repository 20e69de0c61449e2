"""The WASI 0.2 `udp-socket` and its datagram streams, sans-IO.

Theory of operation
-------------------
A `UdpSocket` moves `unbound -> bind-in-progress -> bound` (`start-bind`,
`finish-bind`, with the same refusal rules as TCP: `invalid-state` in the
wrong state, `not-in-progress` for a `finish-bind` without a bind). Once
bound, `stream(remote?)` returns an `IncomingDatagramStream` and an
`OutgoingDatagramStream`; with a remote address the pair only talks to that
peer. Calling `stream` again while the previous pair is alive is a trap, as
in wasmtime.

Sending never blocks: `check-send` always permits 16 datagrams (wasmtime's
permit), `send` without a permit, or with more datagrams than permitted, is
a trap. A datagram goes straight into the queue of the socket bound to the
destination port of this workload's loopback, keeping its boundaries. A
datagram to a port nobody bound, to another guest's private port (unless it
is a reply: the private socket sent to, or connected to, the sender's port),
or to a full queue is dropped, as UDP drops it; `datagram-too-large` above 65535
bytes. Each socket's queue is bounded by its receive buffer size (bytes)
and by `MAX_QUEUED_DATAGRAMS`.

UDP egress does not exist: a non-loopback destination is refused by the
policy check (`access-denied`).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Protocol

import msgspec

from .address import (
    IpAddress,
    IpAddressFamily,
    SocketAddress,
    is_valid_address_family,
    is_valid_remote_address,
)
from .errors import ErrorCode, NetTrap, SocketError
from .policy import SocketAddrUse
from .ports import PortBinding
from .readiness import Notifier, wait_until

__all__ = [
    "MAX_DATAGRAM_SIZE",
    "MAX_QUEUED_DATAGRAMS",
    "SEND_PERMIT",
    "IncomingDatagram",
    "IncomingDatagramStream",
    "OutgoingDatagram",
    "OutgoingDatagramStream",
    "UdpSocket",
    "UdpState",
]

MAX_DATAGRAM_SIZE = 65535
MAX_QUEUED_DATAGRAMS = 1024
SEND_PERMIT = 16
_I32_MAX = 2**31 - 1


class UdpState(enum.Enum):
    UNBOUND = "unbound"
    BIND_IN_PROGRESS = "bind-in-progress"
    BOUND = "bound"


class IncomingDatagram(msgspec.Struct, frozen=True):
    data: bytes
    remote_address: SocketAddress


class OutgoingDatagram(msgspec.Struct, frozen=True):
    data: bytes
    remote_address: SocketAddress | None = None


def _same_peer(a: SocketAddress, b: SocketAddress) -> bool:
    if a.port != b.port:
        return False
    return a.address == b.address or (a.is_loopback and b.is_loopback)


class UdpHost(Protocol):
    """What a UDP socket needs of its guest's network (`GuestNetwork` is one)."""

    def check(self, addr: SocketAddress, use: SocketAddrUse) -> None: ...
    def bind_udp(
        self, sock: UdpSocket, addr: SocketAddress
    ) -> tuple[PortBinding, SocketAddress]: ...
    def send_datagram(self, sock: UdpSocket, data: bytes, dest: SocketAddress) -> None: ...
    def forget(self, sock: UdpSocket) -> None: ...


class UdpSocket:
    """A WASI `udp-socket`. Create with `a network's `create_udp_socket``."""

    def __init__(self, guest: UdpHost, family: IpAddressFamily) -> None:
        self._guest = guest
        self._family = family
        self._state = UdpState.UNBOUND
        self._binding: PortBinding | None = None
        self._local: SocketAddress | None = None
        self._remote: SocketAddress | None = None
        self._queue: deque[IncomingDatagram] = deque()
        self._queued_bytes = 0
        self._notifier = Notifier()
        self._streams: tuple[IncomingDatagramStream, OutgoingDatagramStream] | None = None
        self._dropped = False
        self.hop_limit = 64
        self.receive_buffer = 106496  # what wasmtime reports for a Linux UDP socket
        self.send_buffer = 106496
        self.received = 0
        self.dropped = 0
        self._peer_ports: set[int] = set()  # ports this socket sent to or connected to

    @property
    def state(self) -> UdpState:
        return self._state

    @property
    def guest(self) -> UdpHost:
        return self._guest

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start_bind(self, network: UdpHost, local_address: SocketAddress) -> None:
        if self._state is not UdpState.UNBOUND:
            raise SocketError(ErrorCode.INVALID_STATE, f"state {self._state.value}")
        if not is_valid_address_family(local_address, self._family):
            raise SocketError(ErrorCode.INVALID_ARGUMENT, f"bad address {local_address}")
        if network is not self._guest:
            raise SocketError(ErrorCode.INVALID_ARGUMENT, "socket belongs to another network")
        network.check(local_address, SocketAddrUse.UDP_BIND)
        self._binding, self._local = network.bind_udp(self, local_address)
        self._state = UdpState.BIND_IN_PROGRESS

    def finish_bind(self) -> None:
        if self._state is not UdpState.BIND_IN_PROGRESS:
            raise SocketError(ErrorCode.NOT_IN_PROGRESS, f"state {self._state.value}")
        self._state = UdpState.BOUND

    def stream(
        self, remote_address: SocketAddress | None = None
    ) -> tuple[IncomingDatagramStream, OutgoingDatagramStream]:
        if self._streams is not None and not all(s.closed for s in self._streams):
            raise NetTrap("UDP streams not dropped yet")
        if self._state is not UdpState.BOUND:
            raise SocketError(ErrorCode.INVALID_STATE, "not bound")
        self._remote = None
        if remote_address is not None:
            if not is_valid_address_family(
                remote_address, self._family
            ) or not is_valid_remote_address(remote_address):
                raise SocketError(ErrorCode.INVALID_ARGUMENT, f"bad address {remote_address}")
            self._guest.check(remote_address, SocketAddrUse.UDP_CONNECT)
            self._remote = remote_address
            self._peer_ports.add(remote_address.port)
        self._streams = (
            IncomingDatagramStream(self, self._remote),
            OutgoingDatagramStream(self, self._remote),
        )
        return self._streams

    def local_address(self) -> SocketAddress:
        if self._state is not UdpState.BOUND or self._local is None:
            raise SocketError(ErrorCode.INVALID_STATE, "not bound")
        if self._remote is not None and self._local.is_unspecified:
            # A connected socket has a source address, as the kernel picks one
            # at connect(); it is unspecified again after a disconnect.
            return self.source_address
        return self._local

    def remote_address(self) -> SocketAddress:
        if self._remote is None:
            raise SocketError(ErrorCode.INVALID_STATE, "not connected")
        return self._remote

    def address_family(self) -> IpAddressFamily:
        return self._family

    def unicast_hop_limit(self) -> int:
        return self.hop_limit

    def set_unicast_hop_limit(self, value: int) -> None:
        if value <= 0:
            raise SocketError(ErrorCode.INVALID_ARGUMENT, "hop limit must be at least 1")
        self.hop_limit = min(value, 255)

    def receive_buffer_size(self) -> int:
        return self.receive_buffer

    def set_receive_buffer_size(self, value: int) -> None:
        if value <= 0:
            raise SocketError(ErrorCode.INVALID_ARGUMENT, "buffer size must be positive")
        self.receive_buffer = min(value, _I32_MAX)

    def send_buffer_size(self) -> int:
        return self.send_buffer

    def set_send_buffer_size(self, value: int) -> None:
        if value <= 0:
            raise SocketError(ErrorCode.INVALID_ARGUMENT, "buffer size must be positive")
        self.send_buffer = min(value, _I32_MAX)

    def ready(self) -> bool:
        return True  # no socket-level operation of UDP blocks

    async def wait_ready(self) -> None:
        return None

    @property
    def source_address(self) -> SocketAddress:
        """The address receivers see datagrams from."""
        assert self._local is not None
        if self._local.is_unspecified:
            return self._local.with_ip(IpAddress.loopback(self._family))
        return self._local

    def expects_from(self, port: int) -> bool:
        """Whether this socket sent to (or connected to) loopback `port`.

        A component's ephemeral port is private, but a reply from a port it
        talked to reaches it, as a stateful firewall lets replies in.
        """
        return port in self._peer_ports

    def deliver(self, data: bytes, source: SocketAddress) -> bool:
        """Queue a datagram from `source`; False (dropped) when the queue is full."""
        limit = max(self.receive_buffer, MAX_DATAGRAM_SIZE)
        if (
            self._dropped
            or len(self._queue) >= MAX_QUEUED_DATAGRAMS
            or self._queued_bytes + len(data) > limit
        ):
            self.dropped += 1
            return False
        if source.family is not self._family:
            source = SocketAddress.of(IpAddress.loopback(self._family), source.port)
        self._queue.append(IncomingDatagram(data, source))
        self._queued_bytes += len(data)
        self._notifier.notify()
        return True

    def _pop(self) -> IncomingDatagram | None:
        if not self._queue:
            return None
        datagram = self._queue.popleft()
        self._queued_bytes -= len(datagram.data)
        return datagram

    def close(self) -> None:
        if self._dropped:
            return
        self._dropped = True
        self._queue.clear()
        self._queued_bytes = 0
        if self._binding is not None:
            self._binding.release()
            self._binding = None
        self._notifier.notify()
        self._guest.forget(self)

    @property
    def closed(self) -> bool:
        return self._dropped

    def __repr__(self) -> str:
        parts = [f"<UdpSocket {self._family.value} {self._state.value}"]
        if self._local is not None:
            parts.append(f"local={self._local}")
        if self._remote is not None:
            parts.append(f"remote={self._remote}")
        parts.append(f"queued={len(self._queue)} received={self.received}")
        parts.append(f"dropped={self.dropped}")
        return " ".join(parts) + ">"


class IncomingDatagramStream:
    """`incoming-datagram-stream`: a child of its socket."""

    def __init__(self, socket: UdpSocket, remote: SocketAddress | None) -> None:
        self._socket = socket
        self._remote = remote
        self.closed = False

    def receive(self, max_results: int) -> list[IncomingDatagram]:
        """Up to `max_results` queued datagrams; `[]` when none. Never would-block."""
        out: list[IncomingDatagram] = []
        sock = self._socket
        while len(out) < max_results:
            datagram = sock._pop()
            if datagram is None:
                break
            if self._remote is not None and not _same_peer(self._remote, datagram.remote_address):
                sock.dropped += 1
                continue
            sock.received += 1
            out.append(datagram)
        return out

    def ready(self) -> bool:
        return bool(self._socket._queue) or self._socket.closed

    async def wait_ready(self) -> None:
        await wait_until(self.ready, self._socket._notifier)

    def close(self) -> None:
        self.closed = True


class OutgoingDatagramStream:
    """`outgoing-datagram-stream`: a child of its socket."""

    def __init__(self, socket: UdpSocket, remote: SocketAddress | None) -> None:
        self._socket = socket
        self._remote = remote
        self._permit = 0
        self.closed = False
        self.sent = 0

    def check_send(self) -> int:
        self._permit = SEND_PERMIT
        return self._permit

    def send(self, datagrams: list[OutgoingDatagram]) -> int:
        """Send in order; stops at the first error (raised only if nothing was sent)."""
        if not self._permit:
            raise NetTrap("unpermitted: must call check-send first")
        if len(datagrams) > self._permit:
            raise NetTrap("unpermitted: argument exceeds permitted size")
        self._permit = 0
        count = 0
        for datagram in datagrams:
            try:
                self._send_one(datagram)
            except SocketError:
                if count:
                    return count
                raise
            count += 1
        self.sent += count
        return count

    def _send_one(self, datagram: OutgoingDatagram) -> None:
        sock = self._socket
        if len(datagram.data) > MAX_DATAGRAM_SIZE:
            raise SocketError(ErrorCode.DATAGRAM_TOO_LARGE, f"{len(datagram.data)} bytes")
        given = datagram.remote_address
        if self._remote is None:
            if given is None:
                raise SocketError(ErrorCode.INVALID_ARGUMENT, "no destination address")
            dest = given
        elif given is None or given == self._remote:
            dest = self._remote
        else:
            raise SocketError(ErrorCode.INVALID_ARGUMENT, "destination differs from stream's")
        if not is_valid_remote_address(dest) or not is_valid_address_family(
            dest, sock.address_family()
        ):
            raise SocketError(ErrorCode.INVALID_ARGUMENT, f"bad destination {dest}")
        if self._remote is None:
            sock.guest.check(dest, SocketAddrUse.UDP_OUTGOING_DATAGRAM)
        sock._peer_ports.add(dest.port)
        sock.guest.send_datagram(sock, bytes(datagram.data), dest)

    def ready(self) -> bool:
        return True

    async def wait_ready(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True
