"""The pool's exceptions: one small hierarchy, mapped from driver errors at the edge.

::

    PoolError
    ├── AcquireTimeout      no connection became free within the acquire timeout
    ├── PoolClosed          the pool is closed (or closed while you waited)
    ├── LeaseReleased       a lease was used after it went back to the pool
    ├── ConnectionLost      the connection died mid-lease (restart, kill, network cut)
    │   └── ConnectFailed   a new connection could not be opened
    └── DatabaseError       the database (or the driver, before sending) rejected a statement
"""

from __future__ import annotations

__all__ = [
    "AcquireTimeout",
    "ConnectFailed",
    "ConnectionLost",
    "DatabaseError",
    "LeaseReleased",
    "PoolClosed",
    "PoolError",
    "ResultTooLarge",
]


class PoolError(Exception):
    """Base class of every error raised by :mod:`pools`."""


class AcquireTimeout(PoolError):
    """No connection became available before the acquire timeout ran out."""


class PoolClosed(PoolError):
    """The pool is closed; no more leases are handed out."""


class LeaseReleased(PoolError):
    """The lease was already released; its connection belongs to the pool again."""


class ResultTooLarge(PoolError):
    """A result crossed a row or byte limit while it was being read; the rest was
    not read, the statement was stopped, and the lease stays usable."""

    def __init__(self, message: str, *, rows: int = 0, size: int = 0) -> None:
        super().__init__(message)
        self.rows = rows
        self.size = size


class ConnectionLost(PoolError):
    """The connection behind a lease died (database restarted, backend killed, network cut).

    The lease is unusable afterwards; releasing it discards the connection and the pool
    replaces it.
    """


class ConnectFailed(ConnectionLost):
    """A new connection to the database could not be opened (raised by ``acquire``)."""


class DatabaseError(PoolError):
    """The database rejected a statement: syntax error, constraint violation, ...

    ``code`` is the SQLSTATE for PostgreSQL and the error number for MySQL/MariaDB
    (as a string); ``sqlstate`` is the SQLSTATE when the server sent one. Errors the
    driver raises before anything is sent (wrong parameter count or type) have
    ``code == "client"`` and no ``sqlstate``. The lease stays usable.
    """

    code: str
    sqlstate: str | None
    message: str

    def __init__(self, message: str, *, code: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.sqlstate = sqlstate

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, code={self.code!r}, "
            f"sqlstate={self.sqlstate!r})"
        )
