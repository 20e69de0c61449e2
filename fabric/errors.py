"""The root of fabric's user-facing errors.

Every layer's hierarchy descends from :class:`FabricError`, so one
``except FabricError`` catches what fabric raises: ``fabric.engine.EngineError``,
``fabric.net.NetError``, ``fabric.workload.WorkloadError``,
``fabric.build.BuildError``, ``fabric.postgres.PgClusterError``, and the dbpool
service's ``ProtocolError`` and client ``DbPoolError``. ``pools.PoolError`` is
the exception: ``pools`` stands alone and imports nothing of fabric. The CLI
turns any error a user can act on into a one-line message through
``UsageError``.
"""

from __future__ import annotations


class FabricError(Exception):
    """Base class of every error fabric raises (``pools.PoolError`` aside)."""


class UsageError(FabricError):
    """Bad input on the command line or in a file: shown as one line, exit status 2."""
