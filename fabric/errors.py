"""The root of fabric's user-facing errors.

Each layer has its own hierarchy (``fabric.engine.EngineError``,
``fabric.net.SocketError``, ``fabric.workload.WorkloadError``,
``pools.PoolError``); the CLI turns any error a user can act on into a
one-line message through ``UsageError``.
"""

from __future__ import annotations


class FabricError(Exception):
    """Base class of fabric's own errors outside the engine bridge."""


class UsageError(FabricError):
    """Bad input on the command line or in a file: shown as one line, exit status 2."""
