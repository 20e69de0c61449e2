"""The pooled database service: lends pooled PostgreSQL/MySQL connections to
short-lived clients over a stream (protocol: ``docs/dbpool-protocol.md``).

Host side: `DbPoolService` (pools + server from a `DbPoolConfig`),
`DbPoolServer` (given pools), the asyncio client `connect`.  Guests use the
pure-Python SDK in ``services/dbpool/guest/fabric_dbpool.py``.
"""

from __future__ import annotations

from .client import DbPoolClient, DbPoolError, Result, connect
from .messages import DatabaseStats, Limits, ServerStats
from .protocol import PROTOCOL_VERSION, ProtocolError
from .server import DbPoolServer
from .service import DbPoolConfig, DbPoolService

__all__ = [
    "PROTOCOL_VERSION",
    "DatabaseStats",
    "DbPoolClient",
    "DbPoolConfig",
    "DbPoolError",
    "DbPoolServer",
    "DbPoolService",
    "Limits",
    "ProtocolError",
    "Result",
    "ServerStats",
    "connect",
]
