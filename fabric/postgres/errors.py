"""Errors of the PostgreSQL tooling (one root: :class:`PgClusterError`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fabric.errors import FabricError

# --------------------------------------------------------------------- errors


class PgClusterError(FabricError):
    """Base class of every error raised by this module."""


class PostgresNotFound(PgClusterError):
    """No PostgreSQL server binaries (and no ``pgserver`` package) were found."""


class ClusterStateError(PgClusterError):
    """An operation does not fit the cluster's state (e.g. SQL on a stopped cluster)."""


class ClusterCommandError(PgClusterError):
    """A PostgreSQL command-line tool failed."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        tool = Path(argv[0]).name if argv else "?"
        super().__init__(f"{tool} exited with status {returncode}: {output.strip()[-2000:]}")


class ClusterStartError(PgClusterError):
    """The server did not start; the message carries the tail of its log."""
