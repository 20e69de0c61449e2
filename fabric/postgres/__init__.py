"""PostgreSQL tooling: throwaway clusters for the demo, the benchmarks and the tests.

One module per concern:

* :mod:`~fabric.postgres.binaries`: finding server binaries (the system's, or
  the ones bundled in the ``pgserver`` package);
* :mod:`~fabric.postgres.proc`: running them (as ``postgres`` when we are
  root), private directories;
* :mod:`~fabric.postgres.probe`: free ports, probing a server, DSNs;
* :mod:`~fabric.postgres.cluster`: :class:`TempCluster`, a throwaway cluster
  with real passwords;
* :mod:`~fabric.postgres.endpoint`: :func:`find_or_start_postgres`, what
  ``fabric demo`` uses.
"""

from __future__ import annotations

from .binaries import BinarySource, PgBinaries, find_pg_binaries
from .cluster import Auth, ClusterStatistics, TempCluster
from .endpoint import EndpointSource, PostgresEndpoint, find_or_start_postgres
from .errors import (
    ClusterCommandError,
    ClusterStartError,
    ClusterStateError,
    PgClusterError,
    PostgresNotFound,
)
from .probe import free_port, make_dsn, port_is_free, probe_postgres
from .proc import ServiceUser, make_private_dir, run_command, service_user, spawn

__all__ = [
    "Auth",
    "BinarySource",
    "ClusterCommandError",
    "ClusterStartError",
    "ClusterStateError",
    "ClusterStatistics",
    "EndpointSource",
    "PgBinaries",
    "PgClusterError",
    "PostgresEndpoint",
    "PostgresNotFound",
    "ServiceUser",
    "TempCluster",
    "find_or_start_postgres",
    "find_pg_binaries",
    "free_port",
    "make_dsn",
    "make_private_dir",
    "port_is_free",
    "probe_postgres",
    "run_command",
    "service_user",
    "spawn",
]
