"""fabric_pgwire, the guest's minimal PostgreSQL client: natively (CPython 3.11)
against the machine's server (trust) and a throwaway cluster (scram-sha-256, md5,
cleartext), then inside the dbbench guest under the wasmtime CLI."""

from __future__ import annotations

import ast
import asyncio
import hashlib
import importlib.util
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fabric.postgres import TempCluster, free_port
from tests.reference.guests import dbbench_guest
from tests.reference.wasmtime_cli import GuestResult, run_guest

from .conftest import Env

ROOT = Path(__file__).resolve().parents[2]
GUEST_DIR = ROOT / "services" / "dbpool" / "guest"
DBBENCH_DIR = ROOT / "fabric" / "guests" / "dbbench"


def _load() -> Any:
    if "fabric_pgwire" in sys.modules:
        return sys.modules["fabric_pgwire"]
    spec = importlib.util.spec_from_file_location("fabric_pgwire", GUEST_DIR / "fabric_pgwire.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fabric_pgwire"] = module
    spec.loader.exec_module(module)
    return module


pgwire: Any = _load()
PgError = pgwire.PgError

LOCAL = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "test"}
SCRAM_USER, SCRAM_PASSWORD = "bench", "b3nch-pässword"
MD5_USER, MD5_PASSWORD = "md5user", "md5-secret"
PLAIN_USER, PLAIN_PASSWORD = "plainuser", "plain-secret"
DB = "benchdb"


@pytest.fixture(scope="module")
def cluster() -> Iterator[TempCluster]:
    """scram-sha-256 for every role, except md5user (md5) and plainuser (cleartext)."""
    with TempCluster(password="superuser-secret") as c:
        c.create_role(SCRAM_USER, SCRAM_PASSWORD)
        c.create_role(PLAIN_USER, PLAIN_PASSWORD)
        c.run_sql(
            "SET password_encryption = 'md5';\n"
            "CREATE ROLE :\"name\" WITH LOGIN PASSWORD :'password';\n",
            variables={"name": MD5_USER, "password": MD5_PASSWORD},
        )
        c.create_database(DB, owner=SCRAM_USER)
        hba = c.data_dir / "pg_hba.conf"
        hba.write_text(
            f"host  all  {MD5_USER}    127.0.0.1/32  md5\n"
            f"host  all  {PLAIN_USER}  127.0.0.1/32  password\n" + hba.read_text()
        )
        c.run_sql("SELECT pg_reload_conf();")
        yield c


def scram_connect(cluster: TempCluster, password: str | None = SCRAM_PASSWORD) -> Any:
    return pgwire.connect(
        port=cluster.port, user=SCRAM_USER, password=password, database=DB, timeout=30
    )


# ------------------------------------------------------------------ sans-IO parts


def test_scram_exchange_matches_rfc7677() -> None:
    scram = pgwire.ScramSha256("pencil", user="user", nonce="rOprNGfwEbeRWgbNEkqO")
    assert scram.client_first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = scram.client_final(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert final == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    scram.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(pgwire.ProtocolError, match="signature"):
        scram.verify(b"v=6rriTRBi23WpRR/wkup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(pgwire.ProtocolError, match="invalid-proof"):
        scram.verify(b"e=invalid-proof")


def test_scram_rejects_a_server_nonce_that_does_not_extend_ours() -> None:
    scram = pgwire.ScramSha256("pencil", nonce="abc")
    with pytest.raises(pgwire.ProtocolError, match="nonce"):
        scram.client_final(b"r=xyzabc,s=QUJD,i=4096")


@pytest.mark.parametrize("password", [b"", b"pw", b"x" * 64, b"y" * 65])
@pytest.mark.parametrize("iterations", [1, 2, 4096])
def test_pure_pbkdf2_matches_hashlib(password: bytes, iterations: int) -> None:
    # The guest has no hashlib.pbkdf2_hmac (it needs OpenSSL): it runs the pure loop.
    expected = hashlib.pbkdf2_hmac("sha256", password, b"NaCl-salt", iterations)
    assert pgwire._pbkdf2_sha256_pure(password, b"NaCl-salt", iterations) == expected


def test_the_module_imports_only_the_standard_library() -> None:
    tree = ast.parse((GUEST_DIR / "fabric_pgwire.py").read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)
    assert not imported & {"ssl", "_hashlib", "ctypes"}


# ------------------------------------------------------- native, real PostgreSQL


def test_trust_select_1() -> None:
    with pgwire.connect(**LOCAL) as conn:
        assert conn.auth_method == "trust"
        assert conn.query("SELECT 1") == (["?column?"], [("1",)])
        assert conn.command_tag == "SELECT 1"
        assert conn.parameters["server_encoding"] == "UTF8"
        assert conn.backend_pid is not None


def test_columns_nulls_text_values_and_statements_without_rows() -> None:
    with pgwire.connect(**LOCAL) as conn:
        columns, rows = conn.query(
            "SELECT g AS id, CASE WHEN g = 2 THEN NULL ELSE 'n' || g END AS name, "
            "'é€' AS utf8, ''::text AS empty, 1.5::numeric AS num, true AS flag "
            "FROM generate_series(1, 3) AS g"
        )
        assert columns == ["id", "name", "utf8", "empty", "num", "flag"]
        assert rows == [
            ("1", "n1", "é€", "", "1.5", "t"),
            ("2", None, "é€", "", "1.5", "t"),
            ("3", "n3", "é€", "", "1.5", "t"),
        ]
        assert conn.query("CREATE TEMPORARY TABLE t (id int)") == ([], [])
        assert conn.command_tag == "CREATE TABLE"
        assert conn.query("INSERT INTO t SELECT generate_series(1, 5)") == ([], [])
        assert conn.command_tag == "INSERT 0 5"
        assert conn.query("SELECT count(*) FROM t WHERE id > 10") == (["count"], [("0",)])
        # Several statements: the last one that returned rows wins.
        assert conn.query("SELECT 1 AS a; SELECT 2 AS b; SET search_path TO public") == (
            ["b"],
            [("2",)],
        )
        assert conn.query("") == ([], [])


def test_sql_errors_carry_sqlstate_and_leave_the_connection_usable() -> None:
    with pgwire.connect(**LOCAL) as conn:
        with pytest.raises(PgError) as syntax:
            conn.query("SELEC 1")
        assert syntax.value.sqlstate == "42601"
        assert "SELEC" in syntax.value.message
        assert syntax.value.fields["S"] == "ERROR"
        with pytest.raises(PgError) as missing:
            conn.query("SELECT * FROM fabric_pgwire_no_such_table")
        assert missing.value.sqlstate == "42P01"
        assert conn.query("SELECT 'still' AS ok") == (["ok"], [("still",)])
        # An error inside a transaction block aborts it until ROLLBACK.
        conn.query("BEGIN")
        with pytest.raises(PgError):
            conn.query("SELECT 1/0")
        with pytest.raises(PgError) as aborted:
            conn.query("SELECT 1")
        assert aborted.value.sqlstate == "25P02"
        conn.query("ROLLBACK")
        assert conn.query("SELECT 1")[1] == [("1",)]


def test_unknown_database_is_a_startup_error() -> None:
    with pytest.raises(PgError) as exc:
        pgwire.connect(**{**LOCAL, "database": "fabric_pgwire_no_such_db"})
    assert exc.value.sqlstate == "3D000"


def test_close_terminates_the_backend() -> None:
    conn = pgwire.connect(**LOCAL)
    pid = conn.backend_pid
    conn.close()
    conn.close()  # idempotent
    assert "closed" in repr(conn)
    with pytest.raises(pgwire.PgWireError):
        conn.query("SELECT 1")
    with pgwire.connect(**LOCAL) as watcher:
        deadline = time.monotonic() + 10
        while watcher.query(f"SELECT 1 FROM pg_stat_activity WHERE pid = {pid}")[1]:
            assert time.monotonic() < deadline, "backend still alive after Terminate"
            time.sleep(0.02)


def test_connection_refused_is_an_os_error() -> None:
    with pytest.raises(ConnectionRefusedError):
        pgwire.connect(port=free_port(), user="postgres")


def test_a_silent_server_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(10)
        with pytest.raises(TimeoutError):
            pgwire.connect(port=port, user="postgres", timeout=0.5)


def test_scram_sha_256(cluster: TempCluster) -> None:
    with scram_connect(cluster) as conn:
        assert conn.auth_method == "SCRAM-SHA-256"
        assert conn.query("SELECT current_user, current_database()") == (
            ["current_user", "current_database"],
            [(SCRAM_USER, DB)],
        )


def test_scram_with_the_pure_key_derivation_the_guest_uses(
    cluster: TempCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgwire, "pbkdf2_sha256", pgwire._pbkdf2_sha256_pure)
    with scram_connect(cluster) as conn:
        assert conn.query("SELECT 1")[1] == [("1",)]


def test_wrong_password_is_rejected(cluster: TempCluster) -> None:
    with pytest.raises(PgError) as exc:
        scram_connect(cluster, password="not-the-password")
    assert exc.value.sqlstate == "28P01"
    assert SCRAM_USER in exc.value.message


def test_missing_password_is_refused_before_sending_anything(cluster: TempCluster) -> None:
    with pytest.raises(pgwire.ProtocolError, match="password"):
        scram_connect(cluster, password=None)


@pytest.mark.parametrize(
    ("user", "password", "method"),
    [(MD5_USER, MD5_PASSWORD, "md5"), (PLAIN_USER, PLAIN_PASSWORD, "cleartext")],
)
def test_md5_and_cleartext(cluster: TempCluster, user: str, password: str, method: str) -> None:
    with pgwire.connect(port=cluster.port, user=user, password=password, database=DB) as conn:
        assert conn.auth_method == method
        assert conn.query("SELECT current_user")[1] == [(user,)]
    with pytest.raises(PgError) as exc:
        pgwire.connect(port=cluster.port, user=user, password="wrong", database=DB)
    assert exc.value.sqlstate == "28P01"


# --------------------------------------------- the dbbench guest under wasmtime


@pytest.fixture(scope="module")
def dbbench() -> Path:
    return dbbench_guest()


def guest(wasm: Path, *args: str, **env: str) -> GuestResult:
    return run_guest(wasm, *args, env=env or None)


def test_guest_scram_round_trip(dbbench: Path, cluster: TempCluster, record_property: Any) -> None:
    result = guest(
        dbbench, "pg-direct", "127.0.0.1", str(cluster.port), SCRAM_USER, SCRAM_PASSWORD, DB,
        "SELECT 1 AS one, current_user AS who",
    ).check()  # fmt: skip
    facts = result.facts
    assert json.loads(facts["columns"]) == ["one", "who"]
    assert json.loads(facts["rows"]) == [["1", SCRAM_USER]]
    assert facts["auth"] == "SCRAM-SHA-256"
    assert facts["pbkdf2"] == "pure"  # no OpenSSL inside the guest
    record_property("guest_scram_connect_select_ms", facts["total_ms"])


def test_guest_wrong_password(dbbench: Path, cluster: TempCluster) -> None:
    result = guest(
        dbbench, "pg-direct", "127.0.0.1", str(cluster.port), SCRAM_USER, "wrong", DB, "SELECT 1"
    )
    assert result.returncode == 1, result.stderr
    assert result.facts["error"] == "28P01"


def test_guest_trust_nulls_and_sql_error(dbbench: Path) -> None:
    local = ("127.0.0.1", "5432", "postgres", "", "test")
    result = guest(dbbench, "pg-direct", *local, "SELECT 1 AS a, NULL AS b, 'é' AS c").check()
    assert json.loads(result.facts["rows"]) == [["1", None, "é"]]
    assert result.facts["auth"] == "trust"
    failed = guest(dbbench, "pg-direct", *local, "SELECT * FROM fabric_pgwire_no_such_table")
    assert failed.returncode == 1
    assert failed.facts["error"] == "42P01"


def test_guest_mysql_direct(dbbench: Path) -> None:
    result = guest(
        dbbench, "mysql-direct", "127.0.0.1", "3306", "root", "", "test",
        "SELECT 1 AS a, NULL AS b, 'x' AS c",
    ).check()  # fmt: skip
    assert json.loads(result.facts["columns"]) == ["a", "b", "c"]
    assert json.loads(result.facts["rows"]) == [[1, None, "x"]]


async def test_guest_pooled_through_the_dbpool_service(dbbench: Path, pg_env: Env) -> None:
    # The service runs on this loop; the guest connects to it over real loopback TCP.
    result = await asyncio.to_thread(
        guest, dbbench, "pooled", str(pg_env.port), "main", "SELECT 1 AS one, NULL AS nothing"
    )
    result.check()
    assert json.loads(result.facts["columns"]) == ["one", "nothing"]
    assert json.loads(result.facts["rows"]) == [[1, None]]


def test_guest_repeat_prints_every_round_trip(dbbench: Path, cluster: TempCluster) -> None:
    result = guest(
        dbbench, "pg-direct", "127.0.0.1", str(cluster.port), SCRAM_USER, SCRAM_PASSWORD, DB,
        "SELECT 1", DBBENCH_REPEAT="3",
    ).check()  # fmt: skip
    assert len(result.facts["all_ms"].split(",")) == 3
    assert json.loads(result.facts["rows"]) == [["1"]]
