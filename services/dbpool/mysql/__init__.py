"""The MySQL front door of the dbpool service: unmodified MySQL drivers borrow
pooled MariaDB/MySQL connections (transaction pooling). See
``docs/mysql-front-door.md``.

Sans-IO: `wire` (framing, packets, response scanning), `handshake` (greeting,
login, scrambles), `statements` (the statements answered without a server
connection). With I/O: `relay.Relay` (one exchange on a leased connection),
`session.MySQLSession` (one client), `door.MySQLFrontDoor`.
"""

from __future__ import annotations

from .config import MySQLConfig, MySQLUser
from .door import MySQLDoorStats, MySQLFrontDoor, check_config

__all__ = ["MySQLConfig", "MySQLDoorStats", "MySQLFrontDoor", "MySQLUser", "check_config"]
