"""``wasi:sockets`` — until the virtual network lands, the deny-all policy."""

from .sockets_denied import interfaces

__all__ = ["interfaces"]
