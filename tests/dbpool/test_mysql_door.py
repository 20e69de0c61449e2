"""The dbpool MySQL front door from the host: PyMySQL, aiomysql and raw packets
through an ingress port of a workload's virtual network, MariaDB behind it."""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiomysql
import pymysql
import pytest

from fabric.net import IngressRule, NetworkPolicy, VirtualNetwork
from services.dbpool.mysql import MySQLConfig, MySQLUser
from services.dbpool.service import DbPoolConfig, DbPoolService

from .conftest import db_config, eventually

USERS = {
    "app": MySQLUser(password="s3cret"),
    "sha": MySQLUser(password="sha-pw", plugin="caching_sha2_password"),
    "narrow": MySQLUser(password="n", databases=["test"]),
}
COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_CLOSE, COM_STMT_RESET = 0x16, 0x17, 0x19, 0x1A


@dataclass
class Door:
    service: DbPoolService
    port: int  # the ingress port on the host
    table: str
    app: str

    def stats(self) -> dict[str, Any]:
        stats = self.service.statistics().mysql
        assert stats is not None
        return stats

    def pymysql(self, user: str = "app", password: str = "s3cret", **kw: Any) -> Any:
        kw.setdefault("database", "test")
        return pymysql.connect(
            host="127.0.0.1", port=self.port, user=user, password=password, connect_timeout=10, **kw
        )

    async def aiomysql(self, **kw: Any) -> Any:
        kw.setdefault("autocommit", True)
        return await aiomysql.connect(
            host="127.0.0.1", port=self.port, user="app", password="s3cret", db="test", **kw
        )


@contextlib.asynccontextmanager
async def front_door(max_size: int = 2, **mysql: Any) -> AsyncIterator[Door]:
    tag = uuid.uuid4().hex[:8]
    app, table = f"fabric-door-{tag}", f"door_{tag}"
    net = VirtualNetwork(f"door-{tag}", NetworkPolicy(ingress=(IngressRule(port=3306),)))

    async def start_server(handler: Any, /, *, host: str, port: int) -> Any:
        return await net.start_server(handler, port, host=host)

    pool = {"max_size": max_size, "min_size": 0, "application_name": app}
    config = DbPoolConfig(
        databases={
            "test": db_config("mysql", **{**pool, **mysql.pop("pool", {})}),
            "other": db_config("mysql", database="mysql", **pool),
        },
        mysql=MySQLConfig(users=USERS, **mysql),
    )
    service = DbPoolService(config, start_server)
    await service.start()
    try:
        (ingress,) = await net.start_ingress()
        await outside(f"CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(64))")
        door = Door(service, ingress.port, table, app)
        yield door
        await eventually(lambda: door.stats()["clients_connected"] == 0)
        assert service.mysql is not None
        await service.mysql.settle()
        for db in service.statistics().databases.values():
            assert db.in_use == 0  # every lease is back
    finally:
        await service.close()
        await net.aclose()
        await outside(f"DROP TABLE IF EXISTS {table}")


async def outside(sql: str, *params: Any) -> Any:
    conn = await aiomysql.connect(
        host="127.0.0.1", port=3306, user="root", password="", db="test", autocommit=True
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql, params or None)
            return await cur.fetchall()
    finally:
        conn.close()


def run(fn: Any, *args: Any) -> Any:
    return asyncio.to_thread(fn, *args)


# ----------------------------------------------------------------------- queries


async def test_pymysql_and_aiomysql_queries() -> None:
    async with front_door() as door:

        def with_pymysql(row: int, user: str, password: str) -> list[Any]:
            conn = door.pymysql(user, password)
            got = []
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT 1, 'two', NULL, 2.5, %s, %s", (b"\x00\xff", "\u00e9t\u00e9")
                    )
                    got.append(cur.fetchall())
                    cur.execute(f"INSERT INTO {door.table} VALUES (%s, %s)", (row, user))
                    conn.commit()
                    with pytest.raises(pymysql.err.ProgrammingError) as info:
                        cur.execute("SELECT * FROM no_such_table_here")
                    got.append(info.value.args[0])
                    cur.execute("SELECT DATABASE()")  # the connection still works
                    got.append(cur.fetchall())
            finally:
                conn.close()
            return got

        for row, user, password in ((1, "app", "s3cret"), (2, "sha", "sha-pw")):
            assert await run(with_pymysql, row, user, password) == [
                ((1, "two", None, 2.5, b"\x00\xff", "\u00e9t\u00e9"),),
                1146,
                (("test",),),
            ]
        conn = await door.aiomysql()
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"SELECT id, name FROM {door.table} ORDER BY id")
                assert await cur.fetchall() == ((1, "app"), (2, "sha"))
                await cur.execute("SELECT REPEAT('x', 300000) AS big")  # many packets
                assert len((await cur.fetchone())[0]) == 300000
        finally:
            conn.close()
        stats = door.stats()
        assert stats["clients_total"] == 3 and stats["auth_failures"] == 0
        assert stats["commands"]["query"] >= 8
        assert stats["bytes_sent"] > 300000 and stats["bytes_received"] > 0
        # the same counters in the metrics endpoint's families
        families = {f["name"]: f for f in door.service.metrics()}
        (sent,) = families["dbpool_door_sent_bytes"]["samples"]
        assert sent == {"value": float(stats["bytes_sent"]), "labels": {"door": "mysql"}}
        (clients,) = families["dbpool_door_clients"]["samples"]
        assert clients["value"] == 3.0


async def test_caching_sha2_through_aiomysql() -> None:
    async with front_door() as door:
        conn = await aiomysql.connect(
            host="127.0.0.1", port=door.port, user="sha", password="sha-pw", db="test"
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT CONCAT('a', 'b')")
                assert await cur.fetchone() == ("ab",)
        finally:
            conn.close()


# ------------------------------------------------------------ prepared statements


def _read_response(conn: Any) -> list[bytes]:
    """Raw packets of one result set response (or the single OK packet)."""
    first = conn._read_packet()
    packets = [first.get_all_data()]
    if first.is_ok_packet():
        return packets
    eofs = 0
    while eofs < 2:
        pkt = conn._read_packet()
        packets.append(pkt.get_all_data())
        eofs += pkt.is_eof_packet()
    return packets


def _prepare(conn: Any, sql: str) -> tuple[int, int, int]:
    conn._execute_command(COM_STMT_PREPARE, sql)
    ok = conn._read_packet().get_all_data()
    stmt_id, columns, params = struct.unpack_from("<IHH", ok, 1)
    for count in (params, columns):
        if count:
            for _ in range(count + 1):  # definitions, then EOF
                conn._read_packet()
    return stmt_id, columns, params


def _execute(conn: Any, stmt_id: int, values: list[str] | None) -> bytes:
    """COM_STMT_EXECUTE with string parameters (types sent when ``values`` is given
    with ``bind``), without the command byte."""
    body = struct.pack("<IBI", stmt_id, 0, 1)
    if values is not None:
        n = len(values)
        body += bytes((n + 7) // 8) + b"\x01" + b"\xfd\x00" * n
        body += b"".join(bytes((len(v),)) + v.encode() for v in values)
    return body


def _execute_again(stmt_id: int, values: list[str]) -> bytes:
    """Parameters without their types (new-params-bound flag 0)."""
    n = len(values)
    body = struct.pack("<IBI", stmt_id, 0, 1) + bytes((n + 7) // 8) + b"\x00"
    return body + b"".join(bytes((len(v),)) + v.encode() for v in values)


async def test_server_side_prepared_statements() -> None:
    async with front_door(max_size=2) as door:

        def client() -> dict[str, Any]:
            conn = door.pymysql()
            seen: dict[str, Any] = {}
            try:
                sid, columns, params = _prepare(conn, "SELECT CONCAT(?, '-', ?) AS joined")
                seen["shape"] = (columns, params)
                conn._execute_command(COM_STMT_EXECUTE, _execute(conn, sid, ["ab", "cd"]))
                seen["first"] = _read_response(conn)
                # no types this time: the server connection it lands on never saw them
                conn._execute_command(COM_STMT_EXECUTE, _execute_again(sid, ["x", "yz"]))
                seen["again"] = _read_response(conn)
                ins, _, _ = _prepare(conn, f"INSERT INTO {door.table} VALUES (?, ?)")
                conn.begin()
                conn._execute_command(COM_STMT_EXECUTE, _execute(conn, ins, ["7", "seven"]))
                seen["insert"] = _read_response(conn)
                conn.rollback()
                conn._execute_command(COM_STMT_EXECUTE, _execute_again(ins, ["8", "eight"]))
                _read_response(conn)
                conn.commit()  # PyMySQL's autocommit is off
                conn._execute_command(COM_STMT_RESET, struct.pack("<I", sid))
                seen["reset_ok"] = conn._read_packet().is_ok_packet()
                conn._execute_command(COM_STMT_CLOSE, struct.pack("<I", sid))
                with pytest.raises(pymysql.err.Error) as info:
                    conn._execute_command(COM_STMT_EXECUTE, _execute(conn, sid, ["a", "b"]))
                    conn._read_packet()
                seen["closed"] = info.value.args[0]
                conn.ping()
            finally:
                conn.close()
            return seen

        seen = await run(client)
        assert seen["shape"] == (1, 2)
        assert b"ab-cd" in seen["first"][-2]  # the row, before the final EOF
        assert b"x-yz" in seen["again"][-2]
        assert seen["insert"][0][0] == 0  # OK
        assert seen["reset_ok"]
        assert seen["closed"] == 1243
        assert await outside(f"SELECT id, name FROM {door.table}") == ((8, "eight"),)
        assert door.stats()["commands"]["stmt_execute"] == 5


# ------------------------------------------------------------------ transactions


async def test_transactions_are_isolated_on_a_one_connection_pool() -> None:
    async with front_door(max_size=1) as door:
        a, b = await door.aiomysql(), await door.aiomysql()
        try:
            ca, cb = await a.cursor(), await b.cursor()
            await ca.execute("BEGIN")
            await ca.execute(f"INSERT INTO {door.table} VALUES (1, 'uncommitted')")
            await ca.execute("SELECT CONNECTION_ID()")
            (a_conn,) = await ca.fetchone()
            other = asyncio.ensure_future(cb.execute(f"SELECT COUNT(*) FROM {door.table}"))
            # B waits for the only connection, which A's transaction holds
            await eventually(lambda: door.service.statistics().databases["test"].waiting == 1)
            assert door.stats()["transactions_open"] == 1
            await ca.execute(f"SELECT name FROM {door.table}")
            assert await ca.fetchall() == (("uncommitted",),)
            assert not other.done()
            await ca.execute("ROLLBACK")
            await other
            assert await cb.fetchone() == (0,)
            await cb.execute("SELECT CONNECTION_ID()")
            assert await cb.fetchone() == (a_conn,)  # the same server connection, in turn
        finally:
            a.close()
            b.close()


async def test_autocommit_off_holds_the_connection_until_commit() -> None:
    async with front_door(max_size=1) as door:

        def client() -> list[Any]:
            conn = door.pymysql()  # PyMySQL's default: autocommit off
            try:
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {door.table} VALUES (1, 'one')")
                    in_txn = bool(conn.server_status & 1)  # SERVER_STATUS_IN_TRANS
                    conn.rollback()
                    cur.execute(f"INSERT INTO {door.table} VALUES (2, 'two')")
                    conn.commit()
                    cur.execute("SELECT @@autocommit")
                    return [in_txn, cur.fetchone()]
            finally:
                conn.close()

        assert await run(client) == [True, (0,)]
        assert await outside(f"SELECT id FROM {door.table}") == ((2,),)


async def test_a_client_vanishing_mid_transaction_is_rolled_back() -> None:
    async with front_door(max_size=1) as door:
        gone = await door.aiomysql()
        cur = await gone.cursor()
        await cur.execute("START TRANSACTION")
        await cur.execute(f"INSERT INTO {door.table} VALUES (1, 'never')")
        await cur.execute("SELECT CONNECTION_ID()")
        (server_conn,) = await cur.fetchone()
        gone.close()  # the socket closes, no COM_QUIT, no ROLLBACK
        await eventually(lambda: door.stats()["transactions_abandoned"] == 1)
        await eventually(lambda: door.service.statistics().databases["test"].in_use == 0)
        conn = await door.aiomysql()
        try:
            async with conn.cursor() as c:
                await c.execute(f"SELECT COUNT(*), CONNECTION_ID() FROM {door.table}")
                assert await c.fetchone() == (0, server_conn)  # rolled back and reused
        finally:
            conn.close()


async def test_session_state_does_not_leak_to_the_next_client() -> None:
    # reset only after transactions: the front door marks statements that leave
    # session state behind, so their connection is reset all the same
    async with front_door(max_size=1, pool={"reset": "after-transactions"}) as door:

        def client(statements: list[str]) -> list[Any]:
            conn = door.pymysql(autocommit=True)
            try:
                with conn.cursor() as cur:
                    got = []
                    for sql in statements:
                        cur.execute(sql)
                        got.append(tuple(cur.fetchall()))
                    return got
            finally:
                conn.close()

        first = await run(
            client,
            [
                "SET @leak = 5",
                "SET NAMES latin1",
                "SELECT @@character_set_client, @@autocommit",
                "USE other",
                "SELECT DATABASE()",
                "BEGIN",
                "SET NAMES utf8mb4",  # inside a transaction: it still holds after it
                "COMMIT",
                "SELECT @@character_set_client",
            ],
        )
        assert first[2:5] == [(("latin1", 1),), (), (("mysql",),)]
        assert first[-1] == (("utf8mb4",),)
        second = await run(
            client, ["SELECT @leak, @@character_set_client, DATABASE(), CONNECTION_ID()"]
        )
        assert second[0][0][:3] == (None, "utf8mb4", "test")


# ---------------------------------------------------------------------- refusals


async def test_wrong_passwords_and_databases_are_refused() -> None:
    async with front_door() as door:
        cases = [
            ("app", "wrong", "test", 1045),
            ("sha", "wrong", "test", 1045),
            ("nobody", "s3cret", "test", 1045),
            ("app", "s3cret", "nope", 1049),
            ("narrow", "n", "other", 1044),
        ]
        for user, password, database, errno in cases:
            with pytest.raises(pymysql.err.OperationalError) as info:
                await run(lambda u=user, p=password, d=database: door.pymysql(u, p, database=d))
            assert info.value.args[0] == errno, (user, info.value)
        assert door.stats()["auth_failures"] == 3


async def _greeted(door: Door) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    header = await reader.readexactly(4)
    await reader.readexactly(int.from_bytes(header[:3], "little"))
    return reader, writer


async def _err(reader: asyncio.StreamReader) -> tuple[int, str]:
    header = await reader.readexactly(4)
    body = await reader.readexactly(int.from_bytes(header[:3], "little"))
    assert body[0] == 0xFF, body
    return int.from_bytes(body[1:3], "little"), body[9:].decode()


async def test_bad_packets_get_err_packets() -> None:
    async with front_door(max_allowed_packet=64 * 1024) as door:
        # a handshake response too short to parse
        reader, writer = await _greeted(door)
        writer.write(b"\x05\x00\x00\x01hello")
        assert (await _err(reader))[0] == 1043
        assert await reader.read() == b""
        writer.close()
        # a TLS request
        reader, writer = await _greeted(door)
        ssl_request = struct.pack("<IIB23x", 0x200 | 0x800 | 0x8000, 1 << 24, 45)
        writer.write(struct.pack("<I", len(ssl_request) | 1 << 24) + ssl_request)
        errno, message = await _err(reader)
        assert errno == 1043 and "TLS" in message
        writer.close()

        def logged_in() -> list[Any]:
            conn = door.pymysql()
            got: list[Any] = []
            try:
                conn._execute_command(0x04, b"")  # COM_FIELD_LIST: not supported
                with pytest.raises(pymysql.err.Error) as info:
                    conn._read_packet()
                got.append(info.value.args[0])
                conn.ping()  # still usable
                with conn.cursor() as cur:  # a command larger than max_allowed_packet
                    with pytest.raises(pymysql.err.Error) as info:
                        cur.execute("SELECT %s", ("x" * 100_000,))
                    got.append(info.value.args[0])
            finally:
                conn.close()
            return got

        assert await run(logged_in) == [1047, 1153]
        errors = door.stats()["errors"]
        assert errors["1043"] == 2 and errors["1047"] == 1 and errors["1153"] == 1


async def test_too_many_clients_are_refused_with_err_1040() -> None:
    async with front_door(max_clients=2, max_external_clients=2) as door:
        first, second = await door.aiomysql(), await door.aiomysql()
        try:
            with pytest.raises(pymysql.err.OperationalError) as info:
                await door.aiomysql()
            assert info.value.args[0] == 1040
        finally:
            first.close()
            second.close()


async def test_random_commands_and_handshakes_never_break_the_front_door(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rnd = random.Random(7)
    commands = [0x02, 0x03, 0x0E, 0x16, 0x17, 0x19, 0x1A, 0x1F, 0x04, 0x11, 0xFF]
    async with front_door(max_allowed_packet=64 * 1024) as door:

        def garbage_command(command: int, body: bytes) -> None:
            conn = door.pymysql(autocommit=True)
            conn._sock.settimeout(0.5)
            try:
                if command == COM_STMT_EXECUTE:  # a real statement, random parameters
                    sid, _, _ = _prepare(conn, "SELECT ?, ?")
                    body = struct.pack("<I", sid) + body
                conn._execute_command(command, body)
                with contextlib.suppress(pymysql.err.Error, TimeoutError):
                    conn._read_packet()
                conn.ping()  # the connection still answers
            except pymysql.err.Error:
                pass  # the front door closed it (a command it cannot follow)
            finally:
                conn.close()

        for _ in range(30):
            command = rnd.choice(commands)
            await run(garbage_command, command, rnd.randbytes(rnd.randrange(0, 40)))
        for _ in range(10):
            reader, writer = await _greeted(door)
            writer.write(rnd.randbytes(rnd.randrange(1, 100)))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await reader.read(1000)
            writer.close()
        conn = await door.aiomysql()  # a well-behaved client is served as ever
        async with conn.cursor() as cur:
            await cur.execute("SELECT 1")
            assert await cur.fetchone() == (1,)
        conn.close()
    assert not [r for r in caplog.records if "session failed" in r.getMessage()]


async def test_a_client_that_stops_reading_is_closed_and_its_connection_discarded() -> None:
    async with front_door(max_size=1, write_timeout=1.0) as door:

        def stalled() -> Any:
            conn = door.pymysql(autocommit=True)
            # ask for about 64 MB and read none of it
            conn._execute_command(0x03, "SELECT REPEAT('x', 1000000) FROM seq_1_to_64")
            return conn

        reader = await run(stalled)
        pool = door.service.statistics
        await eventually(lambda: pool().databases["test"].in_use == 1)
        await eventually(lambda: pool().databases["test"].in_use == 0)  # after write_timeout
        reader._sock.close()
        assert pool().databases["test"].connections_closed == 1  # discarded, not reused
        conn = await door.aiomysql()
        async with conn.cursor() as cur:
            await cur.execute("SELECT 1")
            assert await cur.fetchone() == (1,)
        conn.close()


async def test_closing_the_service_ends_idle_and_open_transactions() -> None:
    async with front_door(max_size=1) as door:
        idle, busy = await door.aiomysql(), await door.aiomysql()
        async with busy.cursor() as cur:
            await cur.execute("BEGIN")
            await cur.execute(f"INSERT INTO {door.table} VALUES (1, 'open')")
        await door.service.close()  # clients still connected, one in a transaction
        assert door.stats()["transactions_abandoned"] == 1
        assert door.service.statistics().databases["test"].in_use == 0
        with pytest.raises(pymysql.err.OperationalError):
            async with idle.cursor() as cur:
                await cur.execute("SELECT 1")
        idle.close()
        busy.close()
        assert await outside(f"SELECT COUNT(*) FROM {door.table}") == ((0,),)


async def test_a_silent_client_is_closed_after_idle_timeout_and_an_active_one_is_not() -> None:
    async with front_door(max_size=2, idle_timeout=0.6) as door:
        silent, active = await door.aiomysql(), await door.aiomysql()
        async with silent.cursor() as cur:
            await cur.execute("BEGIN")
            await cur.execute(f"INSERT INTO {door.table} VALUES (1, 'silent')")
        # the active client keeps talking for longer than the idle timeout
        for _ in range(8):
            async with active.cursor() as cur:
                await cur.execute("SELECT 1")
                assert await cur.fetchone() == (1,)
            await asyncio.sleep(0.15)
        await eventually(lambda: door.stats()["transactions_abandoned"] == 1)
        assert door.stats()["clients_connected"] == 1  # the active one
        with pytest.raises(pymysql.err.OperationalError):
            async with silent.cursor() as cur:
                await cur.execute("SELECT 1")
        async with active.cursor() as cur:
            await cur.execute(f"SELECT COUNT(*) FROM {door.table}")
            assert await cur.fetchone() == (0,)  # the silent client's insert rolled back
        silent.close()
        active.close()
