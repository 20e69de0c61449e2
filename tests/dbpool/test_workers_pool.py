"""``fabric run --workers 2`` with the dbpool service: the pool's ``max_size`` is the
total across workers (counted on the real PostgreSQL under load), and a
``max_size`` below the worker count is refused before anything starts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from fabric.build import build_wat_guest
from fabric.workload import remote_invoke, remote_status
from fabric.workload.errors import ControlError

WAT = Path(__file__).resolve().parent.parent / "guests" / "wat" / "dbpool_select1.wat"
MAX_SIZE = 3


def manifest(tmp_path: Path, app: str, *, max_size: int, min_size: int = 1) -> Path:
    wat = build_wat_guest(WAT)
    path = tmp_path / "db.toml"
    path.write_text(
        f"""
[[workloads]]
name = "db"
[[workloads.services]]
name = "dbpool"
native = "services.dbpool.service:DbPoolService"
ports = [7000]
[workloads.services.config]
port = 7000
[workloads.services.config.databases.pg]
kind = "postgres"
user = "postgres"
database = "test"
min_size = {min_size}
max_size = {max_size}
application_name = "{app}"
[[workloads.components]]
name = "select1"
wasm = "{wat}"
concurrency = 64
queue = 1024
"""
    )
    return path


def test_max_size_below_the_worker_count_is_refused(tmp_path: Path) -> None:
    path = manifest(tmp_path, "unused", max_size=2, min_size=0)
    p = subprocess.run(
        [sys.executable, "-m", "fabric.cli", "run", str(path), "--workers", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, FABRIC_CONTROL=str(tmp_path / "c.sock")),
        check=False,
    )
    assert p.returncode == 2
    assert f"{path}:8: workloads[0].services[0].config: cannot run in 3 workers" in p.stderr
    assert "databases.pg: max_size 2 is the total across 3 workers" in p.stderr
    assert "Traceback" not in p.stderr
    for workers, code in (("3", 1), ("2", 0)):
        p = subprocess.run(
            [sys.executable, "-m", "fabric.cli", "validate", str(path), "--workers", workers],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (p.returncode != 0) == (code == 1), p.stderr
    assert "ok (1 workloads" in p.stdout


async def _count(conn: asyncpg.Connection, app: str) -> int:
    value = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app
    )
    return int(value)


class Running:
    def __init__(self, proc: subprocess.Popen[bytes], control: Path, app: str, log: Path):
        self.proc = proc
        self.control = control
        self.app = app
        self.log = log


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    app = f"fabric-workers-{uuid.uuid4().hex[:10]}"
    path = manifest(tmp_path, app, max_size=MAX_SIZE)
    control = tmp_path / "control.sock"
    log = tmp_path / "fabric.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fabric.cli", "run", str(path), "--workers", "2"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, FABRIC_CONTROL=str(control)),
        )
    run = Running(proc, control, app, log)
    yield run
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()


async def test_connections_stay_within_max_size_across_workers(running: Running) -> None:
    control, app = running.control, running.app
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="test")
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                await remote_status(control)
                break
            except ControlError:
                assert running.proc.poll() is None, running.log.read_text()
                assert time.monotonic() < deadline, "fabric run --workers did not come up"
                await asyncio.sleep(0.2)

        seen: list[int] = []
        done = asyncio.Event()

        async def watch() -> None:
            while not done.is_set():
                seen.append(await _count(admin, app))
                await asyncio.sleep(0.01)

        results: list[object] = []

        async def client(n: int) -> None:
            for _ in range(n):
                result = await remote_invoke(control, "db", "select1", None, ["7000", "pg"])
                results.append(result)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(client(12) for _ in range(32)))
        done.set()
        await watcher

        assert len(results) == 384
        assert all(r == {"exit_code": 0, "stdout": "", "stderr": ""} for r in results), results[:3]
        assert max(seen) <= MAX_SIZE, seen
        assert max(seen) >= 2, seen  # both workers held connections
        report = await remote_status(control)
        assert all(w.routed > 0 for w in report.workers)
        (service,) = report.workloads[0].services
        pools = {k: v["databases"]["pg"] for k, v in service.stats.items()}
        assert set(pools) == {"worker 0", "worker 1"}
        assert pools["worker 0"]["max_size"] + pools["worker 1"]["max_size"] == MAX_SIZE
    finally:
        await admin.close()
