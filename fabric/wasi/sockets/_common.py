"""What the wasi:sockets binding modules share: the error mapping (in one
place), address conversion, and the parent/child rule of the resource table.

Errors: a guest-visible ``fabric.net.SocketError(code)`` becomes the WIT
``error-code`` as ``Err(code.value)``; a contract violation
(``fabric.net.NetTrap``) traps the guest (``fabric.engine.TrapError``).

Children: as in wasmtime's resource table, a stream or a pollable is a child
of the resource it came from (``finish-connect``/``accept`` streams of their
tcp-socket, datagram streams of their udp-socket, every ``subscribe``
pollable of its source). Dropping a parent while one of its children is
alive traps, as wasmtime's ``ResourceTable::delete`` refuses a resource with
children. wasi-libc always drops children first, so a correct guest never
sees it.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fabric.engine import Err, HostResource, TrapError
from fabric.net import IpAddress, IpAddressFamily, NetTrap, SocketAddress, SocketError

from ..io import Pollable, Watch

F = TypeVar("F", bound=Callable[..., Any])

#: WIT ``ip-socket-address``: ``("ipv4", {...})`` or ``("ipv6", {...})``
WitSocketAddress = tuple[str, dict[str, Any]]


def guest_errors(fn: F) -> F:
    """Map ``SocketError`` to the WIT error-code and ``NetTrap`` to a trap."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except SocketError as e:
            raise Err(e.code.value) from None
        except NetTrap as e:
            raise TrapError(str(e)) from None

    return wrapper  # type: ignore[return-value]


def family(value: str) -> IpAddressFamily:
    """WIT ``ip-address-family`` (``"ipv4"`` / ``"ipv6"``)."""
    return IpAddressFamily(value)


def to_address(value: WitSocketAddress) -> SocketAddress:
    """WIT ``ip-socket-address`` -> ``SocketAddress``."""
    case, payload = value
    if case == "ipv4":
        return SocketAddress(IpAddressFamily.IPV4, tuple(payload["address"]), payload["port"])
    return SocketAddress(
        IpAddressFamily.IPV6,
        tuple(payload["address"]),
        payload["port"],
        payload["flow-info"],
        payload["scope-id"],
    )


def from_address(addr: SocketAddress) -> WitSocketAddress:
    """``SocketAddress`` -> WIT ``ip-socket-address``."""
    if addr.family is IpAddressFamily.IPV4:
        return ("ipv4", {"port": addr.port, "address": tuple(addr.address)})
    return (
        "ipv6",
        {
            "port": addr.port,
            "flow-info": addr.flow_info,
            "address": tuple(addr.address),
            "scope-id": addr.scope_id,
        },
    )


def from_ip(ip: IpAddress) -> tuple[str, tuple[int, ...]]:
    """``IpAddress`` -> WIT ``ip-address``."""
    return (ip.family.value, tuple(ip.address))


class Parent(HostResource):
    """A resource that may have children: dropping it while they live traps."""

    children = 0
    kind = "resource"

    def adopt(self) -> None:
        self.children += 1

    def disown(self) -> None:
        self.children -= 1

    def drop(self) -> None:
        if self.children:
            # The guest dies of the trap; release what the resource holds now,
            # since the store's table no longer has it to close at teardown.
            self.close()
            raise TrapError(
                f"{self.kind} dropped while {self.children} of its child resources"
                " (streams, pollables) are alive"
            )
        self.close()


class ChildPollable(Pollable):
    """A ``subscribe`` pollable: a child of the resource it watches."""

    def __init__(
        self,
        ready: Callable[[], bool],
        wait: Callable[[], Awaitable[None]],
        parent: Parent,
        watch: Watch | None = None,
    ) -> None:
        super().__init__(ready, wait, watch=watch)
        self._parent: Parent | None = parent
        parent.adopt()

    def close(self) -> None:
        parent, self._parent = self._parent, None
        if parent is not None:
            parent.disown()


class SocketResource(Parent):
    """A ``tcp-socket`` or ``udp-socket``: ``sock`` is the ``fabric.net`` socket."""

    sock: Any

    def close(self) -> None:
        self.sock.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.sock!r} children={self.children}>"


# --- methods tcp-socket and udp-socket share ------------------------------------
def passthrough(method: str) -> Callable[..., Any]:
    """A socket method whose arguments and result need no conversion."""
    attr = method.replace("-", "_")

    def call(cx: Any, s: SocketResource, *args: Any) -> Any:
        return getattr(s.sock, attr)(*args)

    call.__name__ = attr
    return call


def _start_bind(cx: Any, s: SocketResource, net: Any, addr: WitSocketAddress) -> None:
    s.sock.start_bind(net.handle(), to_address(addr))


def _local(cx: Any, s: SocketResource) -> WitSocketAddress:
    return from_address(s.sock.local_address())


def _remote(cx: Any, s: SocketResource) -> WitSocketAddress:
    return from_address(s.sock.remote_address())


def _address_family(cx: Any, s: SocketResource) -> str:
    return str(s.sock.address_family().value)


def _subscribe(cx: Any, s: SocketResource) -> Pollable:
    return ChildPollable(s.sock.ready, s.sock.wait_ready, s, getattr(s.sock, "watch", None))


#: WIT methods with the same meaning on tcp-socket and udp-socket
SHARED_METHODS: dict[str, Callable[..., Any]] = {
    "start-bind": _start_bind,
    "local-address": _local,
    "remote-address": _remote,
    "address-family": _address_family,
    "subscribe": _subscribe,
}
