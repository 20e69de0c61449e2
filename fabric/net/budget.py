"""Socket budgets: how many sockets one guest (or one ingress port) may hold.

A `SocketBudget` is a counter with a limit, sans-IO. Every `GuestNetwork`
has its own, so no guest can use up another's room: a flood of ingress
clients exhausts the ingress port's budget, never the budget of the
workload's services or components.

A loopback connection costs two sockets, the client's and the one the
listener accepts. Both are charged to the *connecting* guest: the second
is reserved when the connection is queued and handed to the accepted socket
(`take_reserved`), so a listener never runs out of room because of who
connects to it.
"""

from __future__ import annotations

from .errors import ErrorCode, SocketError

__all__ = ["SocketBudget"]


class SocketBudget:
    """At most `limit` sockets in use at once."""

    __slots__ = ("limit", "name", "peak", "refused", "used")

    def __init__(self, limit: int, name: str = "") -> None:
        if limit < 1:
            raise ValueError("a socket budget needs a limit of at least 1")
        self.limit = limit
        self.name = name
        self.used = 0
        self.peak = 0
        self.refused = 0

    @property
    def available(self) -> int:
        return self.limit - self.used

    def can_take(self, n: int = 1) -> bool:
        return self.used + n <= self.limit

    def take(self, n: int = 1) -> None:
        """Charge `n` sockets; `new-socket-limit` (nothing charged) when over the limit."""
        if not self.can_take(n):
            self.refused += 1
            raise SocketError(
                ErrorCode.NEW_SOCKET_LIMIT, f"{self.name or 'guest'}: {self.limit} sockets"
            )
        self.used += n
        self.peak = max(self.peak, self.used)

    def give_back(self, n: int = 1) -> None:
        self.used -= n
        assert self.used >= 0, "socket budget released more than it charged"

    def __repr__(self) -> str:
        return f"<SocketBudget {self.name} {self.used}/{self.limit} refused={self.refused}>"
