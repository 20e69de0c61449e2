"""What ``fabric demo`` uses: the server already at an address, or an embedded one."""

from __future__ import annotations

import secrets
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from .cluster import TempCluster
from .errors import PostgresNotFound
from .probe import make_dsn, port_is_free, probe_postgres

# -------------------------------------------------------------- find or start


EndpointSource = Literal["existing", "system", "pgserver"]


class PostgresEndpoint:
    """Where to reach PostgreSQL, and the embedded cluster behind it (if any)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        password: str | None,
        database: str,
        source: EndpointSource,
        cluster: TempCluster | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database
        self.source: EndpointSource = source
        self.cluster = cluster

    @property
    def dsn(self) -> str:
        return make_dsn(self.host, self.port, self.user, self.password, self.database)

    @property
    def embedded(self) -> bool:
        return self.cluster is not None

    def close(self) -> None:
        """Stop the embedded cluster (a server that was already running is left alone)."""
        if self.cluster is not None:
            self.cluster.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PostgresEndpoint {self.source} {self.host}:{self.port}/{self.database}>"


def find_or_start_postgres(
    port: int = 5432,
    *,
    host: str = "127.0.0.1",
    user: str = "postgres",
    password: str | None = None,
    database: str = "postgres",
    embedded: Literal["any", "system", "pgserver", "never"] = "any",
    base_dir: Path | None = None,
    probe_timeout: float = 1.0,
) -> PostgresEndpoint:
    """Reuse the PostgreSQL server at ``host:port``, or start an embedded one.

    An embedded cluster (``initdb`` route when server binaries exist, else the
    binaries bundled in the ``pgserver`` package) listens on ``port`` when
    that port is free, otherwise on a free port; it uses ``scram-sha-256``
    with ``password`` (a random one when ``None``) for ``user``, and creates
    ``database``. Close the returned endpoint to stop it.
    """
    if probe_postgres(host, port, probe_timeout):
        return PostgresEndpoint(
            host=host, port=port, user=user, password=password, database=database,
            source="existing",
        )  # fmt: skip
    if embedded == "never":
        raise PostgresNotFound(f"no PostgreSQL server answers at {host}:{port}")
    loopback = host in ("127.0.0.1", "localhost")
    secret = password or secrets.token_urlsafe(18)
    cluster = TempCluster(
        port if loopback and port_is_free(port) else None,
        password=secret,
        superuser=user,
        base_dir=base_dir,
        prefer=embedded,
    )
    cluster.start()
    try:
        if database != "postgres":
            cluster.create_database(database)
    except BaseException:
        cluster.stop()
        raise
    return PostgresEndpoint(
        host=cluster.host,
        port=cluster.port,
        user=user,
        password=secret,
        database=database,
        source=cluster.binaries.source,
        cluster=cluster,
    )
