"""``wasi:sockets/ip-name-lookup`` over the workload's ``fabric.net.NameResolver``.

``resolve-addresses`` answers from IP literals, ``localhost`` and the names
the workload configures (see docs/network.md, "Names"); a syntactically bad
name is ``invalid-argument`` at once, other failures come out of
``resolve-next-address`` (``name-unresolvable``, or ``would-block`` while a
host DNS lookup allowed by the policy runs). A guest with ``NO_NETWORK``
gets ``permanent-resolver-failure``, as under wasmtime with lookups
disabled.
"""

from __future__ import annotations

from typing import Any

from fabric.engine import Err, HostInterface
from fabric.net import ErrorCode, ResolveAddressStream

from ..io import Pollable
from ._common import ChildPollable, Parent, from_ip, guest_errors
from .network import Network

__all__ = ["ResolveStream", "interfaces"]


class ResolveStream(Parent):
    """``resolve-address-stream``: the parent of its pollables."""

    kind = "resolve-address-stream"

    def __init__(self, stream: ResolveAddressStream) -> None:
        self.stream = stream

    def resolve_next_address(self) -> tuple[str, tuple[int, ...]] | None:
        ip = self.stream.resolve_next_address()
        return None if ip is None else from_ip(ip)

    def subscribe(self) -> Pollable:
        return ChildPollable(self.stream.ready, self.stream.wait_ready, self)

    def close(self) -> None:
        self.stream.close()


def _resolve(cx: Any, net: Network, name: str) -> ResolveStream:
    if net.guest is None:
        raise Err(ErrorCode.PERMANENT_RESOLVER_FAILURE.value)
    return ResolveStream(net.guest.resolve_addresses(name))


def interfaces(version: str) -> list[HostInterface]:
    lookup = HostInterface(f"wasi:sockets/ip-name-lookup@{version}")
    lookup.resource("resolve-address-stream", ResolveStream)
    lookup.func("resolve-addresses", guest_errors(_resolve))
    m = "[method]resolve-address-stream."
    lookup.func(m + "resolve-next-address", guest_errors(lambda cx, s: s.resolve_next_address()))
    lookup.func(m + "subscribe", lambda cx, s: s.subscribe())
    return [lookup]
