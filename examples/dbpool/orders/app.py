"""The `orders` component: per invocation, reads and writes rows through the
dbpool service instead of opening database connections of its own.

Modes (the component's arguments):

    add ITEM QTY   insert an order into PostgreSQL (`orders` database) and an
                   audit line into MariaDB (`legacy` database), the PostgreSQL
                   side in one transaction
    list           print the latest orders
    count          print how many orders and audit lines there are
"""

# Only modules imported at build time exist at run time: import everything here.
import sys

import fabric_dbpool
from wit_world import exports

DBPOOL_PORT = 7432


def setup(conn: fabric_dbpool.Connection) -> None:
    conn.execute(
        "orders",
        "CREATE TABLE IF NOT EXISTS fabric_orders ("
        " id bigserial PRIMARY KEY, item text NOT NULL, qty int NOT NULL,"
        " created timestamptz NOT NULL DEFAULT now())",
    )
    conn.execute(
        "legacy",
        "CREATE TABLE IF NOT EXISTS fabric_audit ("
        " id bigint AUTO_INCREMENT PRIMARY KEY, line varchar(200) NOT NULL)",
    )


def add(conn: fabric_dbpool.Connection, item: str, qty: int) -> None:
    with conn.transaction("orders"):
        order_id = conn.execute(
            "orders", "INSERT INTO fabric_orders (item, qty) VALUES ($1, $2) RETURNING id",
            [item, qty],
        ).scalar()
        total = conn.execute(
            "orders", "SELECT coalesce(sum(qty), 0) FROM fabric_orders WHERE item = $1", [item]
        ).scalar()
    conn.execute("legacy", "INSERT INTO fabric_audit (line) VALUES (%s)", [f"order {order_id}: {qty} x {item}"])
    print(f"order {order_id}: {qty} x {item} (total {item}: {total})")


def list_orders(conn: fabric_dbpool.Connection) -> None:
    result = conn.execute(
        "orders", "SELECT id, item, qty FROM fabric_orders ORDER BY id DESC LIMIT 10"
    )
    for order_id, item, qty in result.rows:
        print(f"{order_id}\t{item}\t{qty}")


def count(conn: fabric_dbpool.Connection) -> None:
    orders = conn.execute("orders", "SELECT count(*) FROM fabric_orders").scalar()
    audit = conn.execute("legacy", "SELECT count(*) FROM fabric_audit").scalar()
    print(f"orders={orders} audit={audit}")


class Run(exports.Run):
    def run(self) -> None:
        args = sys.argv[1:] or ["list"]
        conn = fabric_dbpool.connect(DBPOOL_PORT)
        try:
            setup(conn)
            if args[0] == "add" and len(args) == 3:
                add(conn, args[1], int(args[2]))
            elif args[0] == "list":
                list_orders(conn)
            elif args[0] == "count":
                count(conn)
            else:
                print(f"usage: add ITEM QTY | list | count (got {args})", file=sys.stderr)
                sys.exit(2)
        finally:
            conn.close()
