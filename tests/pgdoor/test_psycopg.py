"""psycopg 3 (libpq underneath) through the front door: SCRAM login, its
implicit transactions, and server-side prepared statements that must follow
the client from one server session to another."""

from __future__ import annotations

import psycopg

from .conftest import PASSWORD, front_door


def _dsn(port: int, database: str) -> str:
    return f"host=127.0.0.1 port={port} user=app dbname={database} password='{PASSWORD}'"


async def test_psycopg_transactions_and_prepared_statements_across_server_sessions() -> None:
    async with front_door(max_size=2, min_size=2) as door:
        # prepare_threshold=0: psycopg prepares every statement on the server
        conn = await psycopg.AsyncConnection.connect(
            _dsn(door.port, door.database), prepare_threshold=0
        )
        other = await psycopg.AsyncConnection.connect(
            _dsn(door.port, door.database), autocommit=True
        )
        try:
            # psycopg opens a transaction with its first statement (autocommit off)
            await conn.execute(f"CREATE TABLE {door.table} (id int primary key, word text)")
            await conn.execute(f"INSERT INTO {door.table} VALUES (%s, %s)", (1, "one"))
            async with other.cursor() as cur:  # not committed yet: not visible
                await cur.execute(f"SELECT to_regclass('{door.table}') IS NULL")
                assert await cur.fetchone() == (True,)
            await conn.commit()

            query = f"SELECT word, pg_backend_pid() FROM {door.table} WHERE id = %s"
            cur = await conn.execute(query, (1,))
            word, first_pid = await cur.fetchone() or (None, None)
            assert word == "one"
            await conn.commit()
            # hold the session conn just used, so its next statement lands on the other
            async with other.transaction():
                held = await (await other.execute("SELECT pg_backend_pid()")).fetchone()
                assert held == (first_pid,)
                cur = await conn.execute(query, (1,))
                word, second_pid = await cur.fetchone() or (None, None)
                assert word == "one" and second_pid != first_pid
                await conn.commit()
            stats = door.stats()
            assert stats.prepared_statements >= 1
        finally:
            await conn.close()
            await other.close()
        await door.settled()
