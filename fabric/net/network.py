"""The per-workload virtual network and each guest's view of it.

`NetworkCore` is one workload's loopback: a TCP and a UDP port table, the
name table, the policy, the egress routes, the ingress servers and the
socket count (`new-socket-limit`). Guests never touch it directly: each guest
instance gets a `GuestNetwork` from `attach(name, role)`; that object is the
WIT `network` resource the guest passes to `start-bind` / `start-connect`,
the factory of its sockets (`create-tcp-socket`, `create-udp-socket`) and
of its name lookups, and the identity that makes a component's ephemeral
ports private. Native Python code is the guest `net.native` (a service).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, TypeVar

import msgspec

from .address import IpAddress, IpAddressFamily, SocketAddress
from .budget import SocketBudget
from .errors import ErrorCode, SocketError
from .names import NameResolver, ResolveAddressStream
from .pipe import PipeEnd, pipe_pair
from .policy import (
    EgressRule,
    NetworkPolicy,
    Role,
    SocketAddrCheck,
    SocketAddrUse,
    is_local,
    role_check,
)
from .ports import PortBinding, PortTable
from .readiness import Notifier, wait_until
from .tcp import ConnectAttempt, Listener, TcpSocket, _Pending
from .udp import UdpSocket

__all__ = [
    "GuestNetwork",
    "GuestStatistics",
    "IngressStatistics",
    "NetworkCore",
    "NetworkStatistics",
]

logger = logging.getLogger("fabric.net")

Socket = TcpSocket | UdpSocket
_S = TypeVar("_S", TcpSocket, UdpSocket)


class _Closable(Protocol):
    """A server the network owns and closes with itself (an ingress bridge)."""

    def close(self) -> None: ...
    async def wait_closed(self) -> None: ...


class GuestStatistics(msgspec.Struct, frozen=True):
    name: str
    role: str
    tcp_sockets: int
    udp_sockets: int
    budget_used: int = 0  # sockets charged to this guest (its own + those it made others accept)
    budget_limit: int = 0
    budget_refused: int = 0


class IngressStatistics(msgspec.Struct, frozen=True):
    """One ingress rule's listener (`bridge.IngressServer.statistics`)."""

    port: int  # the virtual port
    host: str
    host_port: int
    active: int  # connections open now
    max_connections: int
    connections: int  # forwarded since start
    direct: int  # of `connections`: handed to a native listener (the fast path)
    refused: int  # nothing listening, policy, budget, or over the limit
    over_limit: int


class NetworkStatistics(msgspec.Struct, frozen=True):
    """A snapshot of one workload's network."""

    name: str
    guests: int
    sockets: int
    max_sockets: int
    tcp_ports: tuple[int, ...]
    tcp_listening: tuple[int, ...]
    udp_ports: tuple[int, ...]
    connections: int  # connections established since creation (loopback + egress)
    refused: int
    denied: int
    egress_active: int
    egress_total: int
    ingress_servers: int
    datagrams_delivered: int
    datagrams_dropped: int
    ingress: tuple[IngressStatistics, ...] = ()  # one per ingress rule (`VirtualNetwork`)


class GuestNetwork:
    """One guest instance's handle on the workload network (the WIT `network`)."""

    def __init__(
        self,
        network: NetworkCore,
        name: str,
        role: Role,
        check: SocketAddrCheck,
        *,
        max_sockets: int | None = None,
        external: bool = False,
    ) -> None:
        self.network = network
        self.name = name
        self.role = role
        # True for the ingress bridge: its connections come from outside the workload.
        self.external = external
        self._check = check
        self.budget = SocketBudget(
            max_sockets if max_sockets is not None else network.policy.max_sockets,
            f"{network.name}/{name}",
        )
        # each socket with the budget it is charged to
        self._sockets: dict[Socket, SocketBudget] = {}
        self._closed = False

    # -- factories -----------------------------------------------------------

    def create_tcp_socket(self, family: IpAddressFamily) -> TcpSocket:
        """`create-tcp-socket`; `new-socket-limit` past this guest's budget."""
        self.admit()
        self.budget.take()
        return self._register(TcpSocket(self, family), self.budget)

    def create_udp_socket(self, family: IpAddressFamily) -> UdpSocket:
        """`create-udp-socket`; `access-denied` when the policy disables UDP."""
        if not self.network.policy.allow_udp:
            self._deny(None, "udp")
        self.admit()
        self.budget.take()
        return self._register(UdpSocket(self, family), self.budget)

    def accepted_socket(self, family: IpAddressFamily, budget: SocketBudget) -> TcpSocket:
        """The socket `accept` returns; already charged to the connecting guest's `budget`."""
        return self._register(TcpSocket(self, family), budget)

    def _register(self, sock: _S, budget: SocketBudget) -> _S:
        self._sockets[sock] = budget
        self.network._socket_count += 1
        return sock

    def resolve_addresses(self, name: str) -> ResolveAddressStream:
        """`resolve-addresses`."""
        return self.network.resolver.resolve(name)

    def admit(self) -> None:
        if self._closed:
            raise SocketError(ErrorCode.INVALID_STATE, "guest network closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def forget(self, sock: Socket) -> None:
        """Called by a socket when it is dropped."""
        budget = self._sockets.pop(sock, None)
        if budget is not None:
            budget.give_back()
            self.network._socket_count -= 1

    @property
    def sockets(self) -> frozenset[Socket]:
        return frozenset(self._sockets)

    # -- policy -------------------------------------------------------------

    def check(self, addr: SocketAddress, use: SocketAddrUse) -> None:
        """Run the address check; `access-denied` (logged) when it refuses."""
        if not self._check(addr, use):
            self._deny(addr, use.value)

    def _deny(self, addr: SocketAddress | None, use: str) -> None:
        self.network._denied += 1
        logger.warning(
            "access denied: workload=%s guest=%s role=%s use=%s address=%s",
            self.network.name,
            self.name,
            self.role.value,
            use,
            addr,
        )
        raise SocketError(ErrorCode.ACCESS_DENIED, f"{use} {addr} refused by policy")

    # -- used by the sockets ----------------------------------------------------

    def _bind(self, table: PortTable, addr: SocketAddress) -> tuple[PortBinding, SocketAddress]:
        if not is_local(addr):
            raise SocketError(ErrorCode.ADDRESS_NOT_BINDABLE, f"{addr} is not on this network")
        private = self.role is Role.COMPONENT and addr.port == 0
        binding = table.bind(addr.port, self, private=private)
        return binding, addr.with_port(binding.port)

    def bind_tcp(self, sock: TcpSocket, addr: SocketAddress) -> tuple[PortBinding, SocketAddress]:
        return self._bind(self.network.tcp_ports, addr)

    def bind_udp(self, sock: UdpSocket, addr: SocketAddress) -> tuple[PortBinding, SocketAddress]:
        binding, local = self._bind(self.network.udp_ports, addr)
        self.network.udp_ports.attach(binding, sock)
        return binding, local

    def listen_tcp(self, binding: PortBinding, listener: Listener) -> None:
        self.network.tcp_ports.listen(binding, listener)
        self.network._listening.notify()

    def connect_tcp(
        self, sock: TcpSocket, local: SocketAddress, remote: SocketAddress
    ) -> ConnectAttempt:
        return self.network._connect_tcp(self, sock, local, remote)

    def send_datagram(self, sock: UdpSocket, data: bytes, dest: SocketAddress) -> None:
        self.network._send_datagram(self, sock, data, dest)

    # -- lifetime ---------------------------------------------------------------

    def close(self) -> None:
        """The guest instance is gone: drop every socket and connection it still holds."""
        self._closed = True
        for sock in list(self._sockets):
            if isinstance(sock, TcpSocket):
                sock.abort()
            else:
                sock.close()
        self.network._guests.discard(self)

    def statistics(self) -> GuestStatistics:
        tcp = sum(1 for s in self._sockets if isinstance(s, TcpSocket))
        budget = self.budget
        return GuestStatistics(
            self.name,
            self.role.value,
            tcp,
            len(self._sockets) - tcp,
            budget.used,
            budget.limit,
            budget.refused,
        )

    def __repr__(self) -> str:
        return (
            f"<GuestNetwork {self.network.name}/{self.name} {self.role.value}"
            f" sockets={len(self._sockets)} budget={self.budget.used}/{self.budget.limit}>"
        )


class NetworkCore:
    """The virtual loopback network of one workload, without real sockets.

    `fabric.net.VirtualNetwork` adds what reaches outside it (egress and
    ingress bridges) and the asyncio-shaped API for native code."""

    def __init__(
        self,
        name: str,
        policy: NetworkPolicy | None = None,
        *,
        check: SocketAddrCheck | None = None,
    ) -> None:
        self.name = name
        self.policy = policy if policy is not None else NetworkPolicy()
        self._extra_check = check
        self.tcp_ports = PortTable("tcp", reuse_bound=True)
        self.udp_ports = PortTable("udp", reuse_bound=False)
        self.resolver = NameResolver(allow_dns=self.policy.allow_dns)
        self._guests: set[GuestNetwork] = set()
        self._egress: dict[tuple[IpAddressFamily, tuple[int, ...], int], EgressRule] = {}
        self._listening = Notifier()
        self._tasks: set[asyncio.Task[bool]] = set()
        self._ingress: list[_Closable] = []
        self._socket_count = 0
        self._connections = 0
        self._refused = 0
        self._denied = 0
        self._egress_active = 0
        self._egress_total = 0
        self._datagrams_delivered = 0
        self._datagrams_dropped = 0
        for name_, literal in self.policy.names.items():
            self.resolver.add(name_, [IpAddress.parse(literal)])
        for rule in self.policy.egress:
            ip = rule.destination_ip or self.resolver.synthetic(rule.destination)
            self._egress[(ip.family, ip.address, rule.port)] = rule
        self.native = self.attach("native", Role.SERVICE)

    # -- guests -------------------------------------------------------------------

    def attach(
        self,
        guest: str,
        role: Role = Role.COMPONENT,
        *,
        max_sockets: int | None = None,
        external: bool = False,
    ) -> GuestNetwork:
        """A network handle for one guest instance with `role`.

        Each handle has its own socket budget, `max_sockets` (default: the
        policy's). `external` marks a handle whose connections come from
        outside the workload (the ingress bridge); the accepting side can
        tell (`VirtualStreamWriter.get_extra_info("peer_external")`).
        """
        base = role_check(role, self.egress_route)
        extra = self._extra_check
        check: SocketAddrCheck = (
            base if extra is None else (lambda a, u: base(a, u) and extra(a, u))
        )
        handle = GuestNetwork(self, guest, role, check, max_sockets=max_sockets, external=external)
        self._guests.add(handle)
        return handle

    @property
    def guests(self) -> frozenset[GuestNetwork]:
        return frozenset(self._guests)

    @property
    def socket_count(self) -> int:
        return self._socket_count

    def add_name(self, name: str, address: str | IpAddress) -> None:
        """Make `name` resolvable inside the workload."""
        ip = address if isinstance(address, IpAddress) else IpAddress.parse(address)
        self.resolver.add(name, [ip])

    def egress_route(self, addr: SocketAddress) -> EgressRule | None:
        return self._egress.get((addr.family, addr.address, addr.port))

    # -- connections --------------------------------------------------------------

    def _connect_tcp(
        self, guest: GuestNetwork, sock: TcpSocket, local: SocketAddress, remote: SocketAddress
    ) -> ConnectAttempt:
        rule = self.egress_route(remote)
        if rule is not None:
            return self._connect_egress(rule)
        if not is_local(remote):
            self._refused += 1
            return ConnectAttempt.failed(ErrorCode.REMOTE_UNREACHABLE, f"no route to {remote}")
        binding = self.tcp_ports.find(remote.port, guest)
        listener = binding.endpoint if binding is not None else None
        if not isinstance(listener, Listener):
            self._refused += 1
            return ConnectAttempt.failed(
                ErrorCode.CONNECTION_REFUSED, f"nothing listens on {remote}"
            )
        client_end, server_end = pipe_pair(self.policy.high_water)
        accepted_local = listener.local
        if accepted_local.is_unspecified or accepted_local.family is not remote.family:
            accepted_local = SocketAddress.of(
                remote.ip
                if remote.family is accepted_local.family
                else IpAddress.loopback(accepted_local.family),
                accepted_local.port,
            )
        peer = local
        if peer.family is not accepted_local.family:
            peer = SocketAddress.of(IpAddress.loopback(accepted_local.family), local.port)
        # The accepted socket is charged to the connecting guest: reserve it now.
        if not guest.budget.can_take():
            guest.budget.refused += 1
            self._refused += 1
            client_end.abort()
            server_end.abort()
            return ConnectAttempt.failed(
                ErrorCode.CONNECTION_REFUSED, f"{guest.budget.name}: no room for the connection"
            )
        guest.budget.take()
        pending = _Pending(
            server_end,
            accepted_local,
            peer,
            listener.options_snapshot(),
            budget=guest.budget,
            peer_guest=guest.name,
            peer_external=guest.external,
        )
        if not listener.offer(pending):
            guest.budget.give_back()
            self._refused += 1
            client_end.abort()
            server_end.abort()
            return ConnectAttempt.failed(ErrorCode.CONNECTION_REFUSED, f"backlog of {remote} full")
        self._connections += 1
        attempt = ConnectAttempt()
        attempt.succeed(client_end)
        return attempt

    def count_connection(self) -> None:
        """Count a connection made without a pipe (the ingress fast path)."""
        self._connections += 1

    def _connect_egress(self, rule: EgressRule) -> ConnectAttempt:
        attempt = ConnectAttempt()
        client_end, bridge_end = pipe_pair(self.policy.high_water)
        self._egress_active += 1
        self._egress_total += 1
        task = asyncio.get_running_loop().create_task(
            self._run_egress(
                rule, attempt, client_end, bridge_end, self.policy.egress_connect_timeout
            )
        )
        self._tasks.add(task)

        def done(task: asyncio.Task[bool]) -> None:
            self._tasks.discard(task)
            self._egress_active -= 1
            if task.cancelled():  # perhaps before it ran at all
                attempt.fail(ErrorCode.CONNECTION_ABORTED, "egress cancelled")
                client_end.abort()
                bridge_end.abort()
            elif task.exception() is not None:
                logger.error("egress to %s failed", rule, exc_info=task.exception())
                attempt.fail(ErrorCode.UNKNOWN, "egress failed")
                client_end.abort()
                bridge_end.abort()
            elif task.result():
                self._connections += 1

        def cancel() -> None:
            task.cancel()

        task.add_done_callback(done)
        attempt.on_cancel(cancel)
        return attempt

    def _send_datagram(
        self, guest: GuestNetwork, sock: UdpSocket, data: bytes, dest: SocketAddress
    ) -> None:
        source = sock.source_address.port

        def is_reply(binding: PortBinding) -> bool:
            # a component's private port takes replies from the ports it sent to
            endpoint = binding.endpoint
            return isinstance(endpoint, UdpSocket) and endpoint.expects_from(source)

        target = self.udp_ports.find(dest.port, guest, admit=is_reply) if is_local(dest) else None
        receiver = target.endpoint if target is not None else None
        if isinstance(receiver, UdpSocket) and receiver.deliver(data, sock.source_address):
            self._datagrams_delivered += 1
        else:
            self._datagrams_dropped += 1

    async def _run_egress(
        self,
        rule: EgressRule,
        attempt: ConnectAttempt,
        client_end: PipeEnd,
        bridge_end: PipeEnd,
        connect_timeout: float,
    ) -> bool:
        """Connect an egress route to its real target (`VirtualNetwork` does); the
        core has no real sockets and refuses."""
        attempt.fail(ErrorCode.CONNECTION_REFUSED, f"no egress bridge for {rule}")
        client_end.abort()
        bridge_end.abort()
        return False

    # -- listeners ---------------------------------------------------------------------

    def is_listening(self, port: int, guest: GuestNetwork | None = None) -> bool:
        """Whether something that `guest` (default: native code) can reach listens on `port`."""
        return self.tcp_ports.find(port, guest or self.native) is not None

    async def wait_listening(
        self,
        port: int,
        timeout: float | None = None,
    ) -> None:
        """Wait until `port` has a listener; `TimeoutError` after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            await wait_until(lambda: self.is_listening(port), self._listening)

    # -- lifetime ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop ingress, drop every guest's sockets, cancel egress pumps."""
        for server in self._ingress:
            server.close()
        for server in self._ingress:
            await server.wait_closed()
        self._ingress.clear()
        for guest in list(self._guests):
            guest.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def statistics(self) -> NetworkStatistics:
        listening = tuple(sorted({b.port for b in self.tcp_ports.bindings() if b.listening}))
        return NetworkStatistics(
            name=self.name,
            guests=len(self._guests),
            sockets=self.socket_count,
            max_sockets=self.policy.max_sockets,
            tcp_ports=tuple(self.tcp_ports.ports()),
            tcp_listening=listening,
            udp_ports=tuple(self.udp_ports.ports()),
            connections=self._connections,
            refused=self._refused,
            denied=self._denied,
            egress_active=self._egress_active,
            egress_total=self._egress_total,
            ingress_servers=len(self._ingress),
            datagrams_delivered=self._datagrams_delivered,
            datagrams_dropped=self._datagrams_dropped,
        )

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<{type(self).__name__} {self.name!r} guests={stats.guests} sockets={stats.sockets}"
            f" tcp_ports={len(stats.tcp_ports)} listening={len(stats.tcp_listening)}"
            f" udp_ports={len(stats.udp_ports)} connections={stats.connections}"
            f" egress={stats.egress_active}>"
        )
