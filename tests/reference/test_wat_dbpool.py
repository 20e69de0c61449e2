"""The hand-written WAT dbpool client under the wasmtime CLI, against a real dbpool server.

``tests/guests/wat/dbpool_select1.wat`` does one ``SELECT 1`` round trip over
wasi:sockets TCP with no language runtime (the benchmarks' baseline for the cost
of fabric itself).  Here it runs under the reference runtime with real sockets,
talking to a `DbPoolServer` on 127.0.0.1 over a PostgreSQL pool.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from fabric.build import build_wat_guest
from pools import DatabaseConfig, Pool, create_pool
from services.dbpool.messages import Limits, ServerStats
from services.dbpool.protocol import ClientConnection
from services.dbpool.server import DbPoolServer
from tests.reference.wasmtime_cli import wasmtime_command

WAT_DIR = Path(__file__).resolve().parents[1] / "guests" / "wat"
WAT = WAT_DIR / "dbpool_select1.wat"
#: a configured database whose name needs msgpack's str8 form (32+ bytes)
LONG_DB = "pg_" + "x" * 37


@pytest.fixture(scope="module")
def guest() -> Path:
    return build_wat_guest(WAT)


@dataclass
class Server:
    server: DbPoolServer
    port: int
    listener: asyncio.Server
    pool: Pool

    def statistics(self) -> ServerStats:
        return self.server.statistics()

    async def settled(self) -> ServerStats:
        """The statistics once every lease given back is in its pool again: dbpool
        answers before the lease's reset, so a reply can arrive first."""
        await self.server.settle_releases()
        return self.server.statistics()


async def start_dbpool(limits: Limits | None = None) -> Server:
    """A DbPoolServer on a free 127.0.0.1 port; "pg" and `LONG_DB` share one pool."""
    config = DatabaseConfig(kind="postgres", user="postgres", database="test", max_size=2)
    pool = create_pool(config)
    await pool.start()
    server = DbPoolServer({"pg": pool, LONG_DB: pool}, limits)
    listener = await asyncio.start_server(server.handle_connection, "127.0.0.1", 0)
    return Server(server, listener.sockets[0].getsockname()[1], listener, pool)


async def stop_dbpool(srv: Server) -> None:
    srv.listener.close()
    await srv.server.close()
    await srv.listener.wait_closed()
    await srv.pool.close()


@pytest.fixture
async def dbpool() -> AsyncIterator[Server]:
    srv = await start_dbpool()
    try:
        yield srv
    finally:
        await stop_dbpool(srv)


async def run_guest(guest: Path, *args: str) -> tuple[int, str]:
    """Run the component under the wasmtime CLI while this event loop serves dbpool."""
    proc = await asyncio.create_subprocess_exec(
        *wasmtime_command(guest, *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, RUST_BACKTRACE="0"),
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 120)  # a guard against hangs
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_select1_round_trip(guest: Path, dbpool: Server) -> None:
    """PORT from argv, default database "pg": exit 0 and one query served by the pool."""
    before = dbpool.statistics().databases["pg"].leases_served
    code, err = await run_guest(guest, str(dbpool.port))
    assert code == 0, err
    stats = await dbpool.settled()
    assert stats.requests == {"query": 1}
    assert stats.errors == {}
    assert stats.clients_total == 1
    assert stats.databases["pg"].leases_served == before + 1
    assert stats.databases["pg"].in_use == 0


async def test_repeated_runs(guest: Path, dbpool: Server) -> None:
    for _ in range(3):
        code, err = await run_guest(guest, str(dbpool.port), "pg")
        assert code == 0, err
    stats = dbpool.statistics()
    assert stats.requests == {"query": 3}
    assert stats.clients_total == 3


async def test_database_from_argv(guest: Path, dbpool: Server) -> None:
    """A 40-byte name (msgpack str8, built by the guest at run time) reaches the server."""
    code, err = await run_guest(guest, str(dbpool.port), LONG_DB)
    assert code == 0, err
    stats = dbpool.statistics()
    assert stats.requests == {"query": 1}
    assert stats.errors == {}


async def test_error_reply_is_a_failure(guest: Path, dbpool: Server) -> None:
    """The server answers an unknown database with an error frame: the guest returns err."""
    code, err = await run_guest(guest, str(dbpool.port), "nope")
    assert code == 1, err
    stats = dbpool.statistics()
    assert stats.requests == {"query": 1}
    assert stats.errors == {"unknown_database": 1}


async def test_refused_handshake_is_a_failure(guest: Path) -> None:
    """With max_clients reached the server hello says too_many_clients: err, no query."""
    srv = await start_dbpool(Limits(max_clients=1))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(ClientConnection().hello())
        await reader.readexactly(16)  # accepted: this client holds the only slot
        code, err = await run_guest(guest, str(srv.port))
        assert code == 1, err
        stats = srv.statistics()
        assert stats.clients_rejected == 1
        assert stats.requests == {}
        writer.close()
        await writer.wait_closed()
    finally:
        await stop_dbpool(srv)


async def test_nothing_listening(guest: Path) -> None:
    """connection-refused from finish-connect is an err return, not a trap."""
    code, err = await run_guest(guest, str(free_port()))
    assert code == 1, err  # not TRAP_EXIT_CODE


@pytest.mark.parametrize("port", ["0", "65536", "70x", ""])
async def test_bad_port_argument(guest: Path, port: str) -> None:
    code, err = await run_guest(guest, port)
    assert code == 1, err


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_dbpool_select1", WAT_DIR / "gen_dbpool_select1.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wire_constants_match_the_encoder() -> None:
    """The bytes pasted into the .wat are what services/dbpool encodes today."""
    text = WAT.read_text()
    assert _generator().render(text) == text, "run tests/guests/wat/gen_dbpool_select1.py"
