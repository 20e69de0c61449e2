"""The `visits` component of the Kubernetes example (deploy/kubernetes/fabric.toml).

Per invocation, counts page visits in PostgreSQL through the workload's dbpool
service (the `app` database) instead of opening a connection of its own.

Modes (the component's arguments):

    hit PATH   record one visit of PATH and print how many it has had
    top        print the ten most visited paths

    kubectl exec deploy/fabric -- fabric invoke web visits run '["hit", "/"]'
"""

# Only modules imported at build time exist at run time: import everything here.
import sys

import fabric_dbpool
from wit_world import exports

DBPOOL_PORT = 7432
DB = "app"


def setup(conn: fabric_dbpool.Connection) -> None:
    conn.execute(
        DB,
        "CREATE TABLE IF NOT EXISTS fabric_visits (path text PRIMARY KEY, hits bigint NOT NULL)",
    )


def hit(conn: fabric_dbpool.Connection, path: str) -> None:
    hits = conn.execute(
        DB,
        "INSERT INTO fabric_visits (path, hits) VALUES ($1, 1) "
        "ON CONFLICT (path) DO UPDATE SET hits = fabric_visits.hits + 1 RETURNING hits",
        [path],
    ).scalar()
    print(f"{path}\t{hits}")


def top(conn: fabric_dbpool.Connection) -> None:
    result = conn.execute(DB, "SELECT path, hits FROM fabric_visits ORDER BY hits DESC LIMIT 10")
    for path, hits in result.rows:
        print(f"{path}\t{hits}")


class Run(exports.Run):
    def run(self) -> None:
        args = sys.argv[1:] or ["top"]
        conn = fabric_dbpool.connect(DBPOOL_PORT)
        try:
            setup(conn)
            if args[0] == "hit" and len(args) == 2:
                hit(conn, args[1])
            elif args[0] == "top" and len(args) == 1:
                top(conn)
            else:
                print(f"usage: hit PATH | top (got {args})", file=sys.stderr)
                sys.exit(2)
        finally:
            conn.close()
