"""A wasi:cli/command guest for database benchmarks: one round trip per run.

Usage: ``guest MODE [ARGS...]``; every mode prints ``key=value`` lines:

  pooled PORT DB SQL                           borrow a connection from the dbpool
                                               service on 127.0.0.1:PORT (fabric_dbpool)
  pg-direct HOST PORT USER PASSWORD DB SQL     connect to PostgreSQL (fabric_pgwire),
                                               run SQL, close; "" means no password
  mysql-direct HOST PORT USER PASSWORD DB SQL  the same against MySQL/MariaDB (PyMySQL)
  pooled-keep PORT DB SQL                      like pooled, but the connection stays open in a
                                               module global for the next invocation of the
                                               same instance (reuse); also prints conn_uses
  pbkdf2 ITERATIONS                            time SCRAM's key derivation alone

Modes for the dbpool component tests (all borrow from the dbpool service on
127.0.0.1:PORT; TABLE has columns ``id int, name varchar``; ids and names are
written into the SQL, so one statement works on PostgreSQL and MariaDB):

  query PORT DB SQL PARAMS_JSON                run SQL with PARAMS_JSON (a JSON array)
                                               as parameters; prints columns, rows, rowcount
  txn PORT DB TABLE FIRST_ID COUNT commit|rollback
                                               begin, insert COUNT rows one request each,
                                               count them inside, then commit or roll back;
                                               prints count_inside and ended
  txn-trap PORT DB TABLE ID                    begin, insert one row, then raise an uncaught
                                               exception: the guest traps mid-transaction
  txn-sleep PORT DB TABLE ID SECONDS           begin, insert one row, then sleep (prints
                                               ``inserted=ID`` on stderr first)
  sdk PORT DB TABLE PH                         the rest of the SDK's API: executemany in a
                                               transaction block, a block rolled back by an
                                               exception, ping, stats; PH is the placeholder
                                               ("$1" or "%s"); prints inserted, rolled_back,
                                               count, ping, stats_transactions_open
  typed PORT DB SQL TYPED_PARAMS_JSON          run SQL with typed parameters, a JSON array of
                                               [type, value] pairs (see ``TYPED``); prints
                                               ``values=`` as a JSON list of "type:repr"

The component-test modes print ``transport=import`` when the SDK reaches the
service through the typed ``fabric:dbpool/sql`` import (a build against the
world ``sql-command``), ``transport=socket`` otherwise.

Modes for the instance-reuse tests (a module-global counter and a token
drawn on the first invocation of an instance; each prints ``count=``,
``token=``, ``argv=`` and ``env=`` (``$REUSE_TAG``) as this invocation's
``wasi:cli/environment`` returns them, and ``sys_argv=`` and
``os_environ=``, which componentize-py fills once per instance; ``count=``
also goes to stderr):

  counter                                      just that
  crash                                        then raise an uncaught exception (trap)
  exit CODE                                    then sys.exit(CODE)
  err                                          then return an error from run (no exit call)
  sleep SECONDS                                then sleep (outlives a short timeout)
  hold PORT                                    then connect to 127.0.0.1:PORT and read
                                               until EOF (a rendezvous the test controls)

Output: ``columns=<json>``, ``rows=<json>`` (values the JSON encoder cannot
write are printed with ``str``), ``connect_ms``, ``query_ms``, ``total_ms``
(wall time inside the guest: connect + query + close), and for pg-direct
``auth=`` and ``pbkdf2=`` (``hashlib`` or ``pure``: what derives the SCRAM key).
Set the environment variable ``DBBENCH_REPEAT=N`` to repeat the round trip
N times in one run (``total_ms`` is then the median, ``all_ms`` lists them).

DbPoolErrors of the component-test modes also print ``code=`` (the dbpool
error code) and ``db_code=`` before ``error=``.

Failures print ``error=<code>`` (SQLSTATE, dbpool code, MySQL error number or
errno name) and ``message=...``, then exit with status 1.
"""

# Only modules imported at build time exist at run time: import everything here.
import encodings.idna  # noqa: F401  (getaddrinfo needs it)
import datetime
import decimal
import errno
import json
import os
import socket
import sys
import time
import uuid

import fabric_dbpool
import fabric_pgwire
import pymysql
import pymysql.cursors
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import environment

LAST_AUTH: list = [None]  # how the last pg-direct connection authenticated
# What a reused instance keeps between invocations (see the reuse modes).
STATE: dict = {"count": 0, "token": None, "conn": None, "conn_uses": 0}


OUTPUT: list[str] = []  # this invocation's stdout lines, written at once


def out(key: str, value: object) -> None:
    # Collected: flush_out() writes them in one go at the end of run (fail()
    # before it exits); sys.stdout is line-buffered here, and every line
    # would otherwise cost the host calls of a write and a flush.
    OUTPUT.append(f"{key}={value}\n")


def flush_out() -> None:
    if OUTPUT:
        sys.stdout.write("".join(OUTPUT))
        OUTPUT.clear()
    sys.stdout.flush()


def as_json(value: object) -> str:
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def now_ms() -> float:
    return time.perf_counter() * 1000.0


def pooled(args: list[str]) -> tuple[list, list, float, float]:
    port, db, sql = int(args[0]), args[1], args[2]
    start = now_ms()
    conn = fabric_dbpool.connect(port=port)
    connected = now_ms()
    try:
        res = conn.execute(db, sql)
    finally:
        conn.close()
    return res.columns, [list(r) for r in res.rows], connected - start, now_ms() - connected


def pooled_keep(args: list[str]) -> tuple[list, list, float, float]:
    port, db, sql = int(args[0]), args[1], args[2]
    start = now_ms()
    conn = STATE["conn"]
    if conn is None:
        conn = STATE["conn"] = fabric_dbpool.connect(port=port)
    connected = now_ms()
    try:
        res = conn.execute(db, sql)
    except BaseException:
        STATE["conn"] = None
        conn.close()
        raise
    STATE["conn_uses"] += 1
    return res.columns, [list(r) for r in res.rows], connected - start, now_ms() - connected


def pg_direct(args: list[str]) -> tuple[list, list, float, float]:
    host, port, user, password, db, sql = args[0], int(args[1]), *args[2:6]
    start = now_ms()
    conn = fabric_pgwire.connect(
        host, port, user=user, password=password or None, database=db, timeout=30
    )
    connected = now_ms()
    try:
        columns, rows = conn.query(sql)
    finally:
        conn.close()
    LAST_AUTH[0] = conn.auth_method
    return columns, [list(r) for r in rows], connected - start, now_ms() - connected


def mysql_direct(args: list[str]) -> tuple[list, list, float, float]:
    host, port, user, password, db, sql = args[0], int(args[1]), *args[2:6]
    start = now_ms()
    conn = pymysql.connect(
        host=host, port=port, user=user, password=password, database=db, connect_timeout=30
    )
    connected = now_ms()
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            columns = [d[0] for d in cur.description or ()]
            rows = [list(r) for r in cur.fetchall()]
        conn.commit()
    finally:
        conn.close()
    return columns, rows, connected - start, now_ms() - connected


def pbkdf2(args: list[str]) -> None:
    iterations = int(args[0])
    start = now_ms()
    fabric_pgwire.pbkdf2_sha256(b"password", b"salt-salt-salt", iterations)
    out("pbkdf2", fabric_pgwire.PBKDF2_IMPLEMENTATION)
    out("pbkdf2_ms", f"{now_ms() - start:.2f}")


MODES = {"pooled": (pooled, 3), "pooled-keep": (pooled_keep, 3), "pg-direct": (pg_direct, 6), "mysql-direct": (mysql_direct, 6)}


def fail(code: object, message: object) -> None:
    out("error", code)
    out("message", str(message).replace("\n", " "))
    flush_out()
    sys.exit(1)


def round_trips(mode: str, args: list[str]) -> None:
    handler, nargs = MODES[mode]
    if len(args) != nargs:
        fail("usage", f"{mode} takes {nargs} arguments, got {len(args)}")
    repeat = int(os.environ.get("DBBENCH_REPEAT", "1"))
    totals: list[float] = []
    for _ in range(repeat):
        start = now_ms()
        columns, rows, connect_ms, query_ms = handler(args)
        totals.append(now_ms() - start)
    out("columns", as_json(columns))
    out("rows", as_json(rows))
    out("connect_ms", f"{connect_ms:.2f}")
    out("query_ms", f"{query_ms:.2f}")
    out("total_ms", f"{sorted(totals)[len(totals) // 2]:.2f}")
    if repeat > 1:
        out("all_ms", ",".join(f"{t:.2f}" for t in totals))
    if mode == "pooled-keep":
        out("conn_uses", STATE["conn_uses"])
    if mode == "pg-direct":
        out("auth", LAST_AUTH[0])
        out("pbkdf2", fabric_pgwire.PBKDF2_IMPLEMENTATION)


# --------------------------------------------------- modes for the component tests


class GuestCrash(Exception):
    """Raised on purpose and left uncaught: the guest traps."""


def insert_sql(table: str, row_id: int) -> str:
    return f"INSERT INTO {table} (id, name) VALUES ({row_id}, 'row-{row_id}')"


def transport(conn: object) -> str:
    return "import" if isinstance(conn, fabric_dbpool.SqlConnection) else "socket"


def query_mode(args: list[str]) -> None:
    port, db, sql, params = int(args[0]), args[1], args[2], json.loads(args[3])
    with fabric_dbpool.connect(port=port, timeout=30) as conn:
        out("transport", transport(conn))
        res = conn.execute(db, sql, params)
    out("columns", as_json(res.columns))
    out("rows", as_json([list(r) for r in res.rows]))
    out("rowcount", res.rowcount)


def txn_mode(args: list[str]) -> None:
    port, db, table, first, count, end = int(args[0]), args[1], args[2], *args[3:6]
    if end not in ("commit", "rollback"):
        fail("usage", f"txn ends with commit or rollback, not {end!r}")
    ids = range(int(first), int(first) + int(count))
    with fabric_dbpool.connect(port=port, timeout=30) as conn:
        conn.begin(db)
        for row_id in ids:
            conn.execute(db, insert_sql(table, row_id))
        inside = conn.execute(
            db, f"SELECT count(*) FROM {table} WHERE id >= {ids.start} AND id < {ids.stop}"
        ).scalar()
        out("count_inside", inside)
        if end == "commit":
            conn.commit()
        else:
            conn.rollback()
        out("ended", end)


def txn_trap_mode(args: list[str]) -> None:
    port, db, table, row_id = int(args[0]), args[1], args[2], int(args[3])
    conn = fabric_dbpool.connect(port=port, timeout=30)
    conn.begin(db)
    conn.execute(db, insert_sql(table, row_id))
    sys.stderr.write(f"inserted={row_id}\n")
    sys.stderr.flush()
    raise GuestCrash(f"crashing inside the transaction on {table} (row {row_id})")


def txn_sleep_mode(args: list[str]) -> None:
    port, db, table, row_id = int(args[0]), args[1], args[2], int(args[3])
    seconds = float(args[4])
    conn = fabric_dbpool.connect(port=port, timeout=seconds + 30)
    conn.begin(db)
    conn.execute(db, insert_sql(table, row_id))
    sys.stderr.write(f"inserted={row_id}\n")
    sys.stderr.flush()
    time.sleep(seconds)
    conn.commit()  # only reached when the component outlives the sleep
    out("ended", "commit")


TYPED = {
    "none": lambda v: None,
    "bool": bool,
    "int": int,
    "float": float,
    "str": str,
    "bytes": bytes.fromhex,
    "decimal": decimal.Decimal,
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
    "datetime": datetime.datetime.fromisoformat,
    "timedelta": lambda v: datetime.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "uuid": uuid.UUID,
    "list": list,
    "dict": dict,
}


def typed_mode(args: list[str]) -> None:
    port, db, sql = int(args[0]), args[1], args[2]
    params = [TYPED[kind](value) for kind, value in json.loads(args[3])]
    with fabric_dbpool.connect(port=port, timeout=30) as conn:
        out("transport", transport(conn))
        res = conn.execute(db, sql, params)
    out("columns", as_json(res.columns))
    values = [f"{type(v).__name__}:{v!r}" for row in res.rows for v in row]
    out("values", as_json(values))


def sdk_mode(args: list[str]) -> None:
    port, db, table, ph = int(args[0]), args[1], args[2], args[3]
    ph2 = "$2" if ph == "$1" else ph
    with fabric_dbpool.connect(port=port, timeout=30) as conn:
        out("transport", transport(conn))
        with conn.transaction(db):
            inserted = conn.executemany(
                db, f"INSERT INTO {table} (id, name) VALUES ({ph}, {ph2})", [(1, "a"), (2, "b")]
            )
            out("in_transaction", conn.in_transaction)
        out("inserted", inserted)
        try:
            with conn.transaction(db):
                conn.execute(db, insert_sql(table, 3))
                raise GuestCrash("roll this back")
        except GuestCrash:
            out("rolled_back", "yes")
        out("in_transaction_after", conn.in_transaction)
        out("count", conn.execute(db, f"SELECT count(*) FROM {table}").scalar())
        out("ping", "ok" if conn.ping() >= 0 else "negative")
        out("stats_transactions_open", conn.stats()["transactions_open"])
    out("closed", conn.closed)


TEST_MODES = {
    "query": (query_mode, 4),
    "txn": (txn_mode, 6),
    "txn-trap": (txn_trap_mode, 4),
    "txn-sleep": (txn_sleep_mode, 5),
    "typed": (typed_mode, 4),
    "sdk": (sdk_mode, 4),
}


# --------------------------------------------------- modes for the instance-reuse tests


def reuse_facts() -> None:
    STATE["count"] += 1
    if STATE["token"] is None:  # drawn at run time: the build-time snapshot is shared
        STATE["token"] = os.urandom(8).hex()
    out("count", STATE["count"])
    sys.stderr.write(f"count={STATE['count']}\n")
    sys.stderr.flush()
    out("token", STATE["token"])
    out("argv", as_json(environment.get_arguments()))
    out("env", dict(environment.get_environment()).get("REUSE_TAG", ""))
    out("sys_argv", as_json(sys.argv))
    out("os_environ", os.environ.get("REUSE_TAG", ""))


def counter_mode(args: list[str]) -> None:
    reuse_facts()


def crash_mode(args: list[str]) -> None:
    reuse_facts()
    raise GuestCrash("crashing on purpose")


def exit_mode(args: list[str]) -> None:
    reuse_facts()
    flush_out()
    sys.exit(int(args[0]))


def err_mode(args: list[str]) -> None:
    reuse_facts()
    flush_out()
    raise Err(None)


def sleep_mode(args: list[str]) -> None:
    reuse_facts()
    time.sleep(float(args[0]))
    out("slept", args[0])


def hold_mode(args: list[str]) -> None:
    reuse_facts()
    with socket.create_connection(("127.0.0.1", int(args[0]))) as sock:
        while sock.recv(4096):
            pass
    out("released", 1)


REUSE_MODES = {
    "counter": (counter_mode, 0),
    "crash": (crash_mode, 0),
    "exit": (exit_mode, 1),
    "err": (err_mode, 0),
    "sleep": (sleep_mode, 1),
    "hold": (hold_mode, 1),
}


def test_case_mode(mode: str, args: list[str]) -> None:
    handler, nargs = TEST_MODES[mode]
    if len(args) != nargs:
        fail("usage", f"{mode} takes {nargs} arguments, got {len(args)}")
    try:
        handler(args)
    except fabric_dbpool.DbPoolError as exc:
        out("code", exc.code)
        out("db_code", exc.db_code)
        raise


class Run(exports.Run):
    def run(self) -> None:
        # Not sys.argv: componentize-py fills it on an instance's first run
        # only, and a reused instance serves several invocations.
        argv = environment.get_arguments()[1:]
        mode = argv[0] if argv else ""
        try:
            if mode == "pbkdf2":
                pbkdf2(argv[1:])
            elif mode in MODES:
                round_trips(mode, argv[1:])
            elif mode in TEST_MODES:
                test_case_mode(mode, argv[1:])
            elif mode in REUSE_MODES:
                handler, nargs = REUSE_MODES[mode]
                if len(argv) - 1 != nargs:
                    fail("usage", f"{mode} takes {nargs} arguments, got {len(argv) - 1}")
                handler(argv[1:])
            else:
                fail("usage", f"unknown mode {mode!r}")
        except fabric_pgwire.PgError as exc:
            fail(exc.sqlstate, exc.message)
        except fabric_dbpool.DbPoolError as exc:
            fail(exc.sqlstate or exc.code, exc.message)
        except pymysql.MySQLError as exc:
            fail(exc.args[0] if exc.args else type(exc).__name__, exc)
        except fabric_pgwire.PgWireError as exc:
            fail(type(exc).__name__, exc)
        except socket.gaierror as exc:
            fail(f"gaierror:{exc.args[0]}", exc)
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            fail(name, exc)
        flush_out()
