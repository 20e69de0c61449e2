"""A wasi:cli/command guest that uses the dbpool guest SDK (fabric_dbpool).

Usage: ``guest PORT TABLE``; prints ``key=value`` facts.  Built with
``-p services/dbpool/guest`` so ``fabric_dbpool`` is importable.
"""

# Only modules imported at build time exist at run time: import everything here.
import decimal
import sys

import fabric_dbpool
from wit_world import exports


def out(key: str, value: object) -> None:
    print(f"{key}={value}", flush=True)


def scenario(port: int, table: str) -> None:
    with fabric_dbpool.connect(port=port, timeout=30) as conn:
        res = conn.execute(
            "main",
            "SELECT $1::int + 1 AS n, $2::numeric * 2 AS d, DATE '2024-02-29' AS day",
            (41, decimal.Decimal("1.25")),
        )
        n, d, day = res.rows[0]
        out("columns", ",".join(res.columns))
        out("n", n)
        out("d", f"{type(d).__name__}:{d}")
        out("day", f"{type(day).__name__}:{day.isoformat()}")
        with conn.transaction("main"):
            conn.executemany("main", f"INSERT INTO {table} VALUES ($1, $2)", [(1, "a"), (2, "b")])
        try:
            with conn.transaction("main"):
                conn.execute("main", f"INSERT INTO {table} VALUES (3, 'c')")
                raise RuntimeError("boom")
        except RuntimeError:
            out("rolled_back", "yes")
        out("count", conn.execute("main", f"SELECT count(*) FROM {table}").scalar())
        try:
            conn.execute("main", "SELEC 1")
        except fabric_dbpool.DbPoolError as exc:
            out("error", f"{exc.code}:{exc.sqlstate}")
        out("clients", conn.stats()["clients_connected"])
        out("python", "{}.{}".format(*sys.version_info[:2]))


class Run(exports.Run):
    def run(self) -> None:
        scenario(int(sys.argv[1]), sys.argv[2])
        sys.stdout.flush()
