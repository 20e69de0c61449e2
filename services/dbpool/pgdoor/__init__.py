"""A PostgreSQL wire-protocol front door for the dbpool service (transaction pooling).

See docs/postgres-front-door.md. `relay.Relay`, `scram.ScramServer` and `wire` are
sans-IO; `door.PgFrontDoor` does the I/O over `pools.PgWirePool` sessions.
"""

from .config import PostgresFrontDoorConfig, PostgresUser
from .door import PgFrontDoor

__all__ = ["PgFrontDoor", "PostgresFrontDoorConfig", "PostgresUser"]
