"""Port tables of one workload's loopback, one per protocol. Sans-IO.

Ports are keyed by number alone: every loopback address (127.0.0.0/8,
::1) and the unspecified address mean the same loopback, so 127.0.0.1:8080
and [::1]:8080 are one port, as in wasmCloud's virtual loopback.

TCP follows wasmtime, which sets SO_REUSEADDR on every bind: several
sockets may be bound to one port as long as none of them listens; binding
a port that has a listener, or listening on a port that already has one,
is `address-in-use`. UDP ports are exclusive (wasmtime sets no
SO_REUSEADDR on UDP sockets).

A binding may be *private* to the guest that made it: a component's
ephemeral loopback port (CPython's asyncio builds its self-pipe from one)
is invisible to every other guest, who finds nothing listening there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .errors import ErrorCode, SocketError

__all__ = ["EPHEMERAL_FIRST", "EPHEMERAL_LAST", "PortBinding", "PortTable"]

EPHEMERAL_FIRST = 49152
EPHEMERAL_LAST = 65535


class PortBinding:
    """One socket's hold on a port."""

    __slots__ = ("endpoint", "listening", "owner", "port", "private", "released", "table")

    def __init__(self, table: PortTable, port: int, owner: object, private: bool) -> None:
        self.table = table
        self.port = port
        self.owner = owner
        self.private = private
        self.listening = False
        self.endpoint: object | None = None  # the listener / UDP socket behind the port
        self.released = False

    def visible_to(self, guest: object) -> bool:
        return not self.private or guest is self.owner

    def release(self) -> None:
        self.table.release(self)

    def __repr__(self) -> str:
        flags = "".join(
            f for f, on in ((" listening", self.listening), (" private", self.private)) if on
        )
        return f"<PortBinding {self.table.protocol}/{self.port}{flags}>"


class PortTable:
    """The bound ports of one protocol in one workload."""

    def __init__(self, protocol: str, *, reuse_bound: bool) -> None:
        self.protocol = protocol
        self.reuse_bound = reuse_bound
        self._ports: dict[int, list[PortBinding]] = {}
        self._cursor = EPHEMERAL_FIRST

    def __len__(self) -> int:
        return len(self._ports)

    def __contains__(self, port: object) -> bool:
        return port in self._ports

    def ports(self) -> list[int]:
        return sorted(self._ports)

    def bindings(self) -> Iterator[PortBinding]:
        for entries in self._ports.values():
            yield from entries

    def _ephemeral(self) -> int:
        span = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1
        for _ in range(span):
            port = self._cursor
            self._cursor = EPHEMERAL_FIRST if port == EPHEMERAL_LAST else port + 1
            if port not in self._ports:
                return port
        raise SocketError(ErrorCode.ADDRESS_IN_USE, "no ephemeral ports available")

    def bind(self, port: int, owner: object, *, private: bool = False) -> PortBinding:
        """Take `port` (0: the next free ephemeral port) for `owner`."""
        if port == 0:
            port = self._ephemeral()
        else:
            entries = self._ports.get(port, [])
            if entries and (not self.reuse_bound or any(b.listening for b in entries)):
                raise SocketError(ErrorCode.ADDRESS_IN_USE, f"{self.protocol} port {port}")
        binding = PortBinding(self, port, owner, private)
        self._ports.setdefault(port, []).append(binding)
        return binding

    def listen(self, binding: PortBinding, endpoint: object) -> None:
        """Mark `binding` as the port's listener."""
        if binding.released:
            raise SocketError(ErrorCode.INVALID_STATE, "binding released")
        entries = self._ports[binding.port]
        if any(b.listening and b is not binding for b in entries):
            raise SocketError(ErrorCode.ADDRESS_IN_USE, f"{self.protocol} port {binding.port}")
        binding.listening = True
        binding.endpoint = endpoint

    def attach(self, binding: PortBinding, endpoint: object) -> None:
        """Record the endpoint (a UDP socket) that receives on `binding`."""
        binding.endpoint = endpoint

    def find(
        self,
        port: int,
        guest: object,
        *,
        admit: Callable[[PortBinding], bool] | None = None,
    ) -> PortBinding | None:
        """The listening (TCP) or bound (UDP) binding on `port` that `guest` can reach.

        `admit(binding)` may let `guest` reach a private binding anyway (a
        UDP reply to a datagram the binding's socket sent).
        """
        for binding in self._ports.get(port, ()):
            if binding.endpoint is None:
                continue
            if not binding.visible_to(guest) and not (admit is not None and admit(binding)):
                continue
            if binding.listening or not self.reuse_bound:
                return binding
        return None

    def release(self, binding: PortBinding) -> None:
        if binding.released:
            return
        binding.released = True
        entries = self._ports.get(binding.port)
        if entries is None:
            return
        entries.remove(binding)
        if not entries:
            del self._ports[binding.port]

    def __repr__(self) -> str:
        listening = sum(1 for b in self.bindings() if b.listening)
        return f"<PortTable {self.protocol} ports={len(self._ports)} listening={listening}>"
