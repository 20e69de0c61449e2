"""fabric contenders for the pooled-database scenarios.

One op is one component invocation doing ``SELECT 1`` (in a fresh instance
unless noted):

* ``fabric-dbpool-py``: a componentize-py component borrowing a pooled
  connection from the dbpool service over the workload's virtual loopback;
* ``fabric-dbpool-py-reuse``: the same component with ``reuse``: a warm
  instance serves the invocation and keeps its dbpool connection open in a
  module global (``pooled-keep``), so one op is one query on that connection
  plus fabric's per-invocation cost;
* ``fabric-dbpool-wat``: the same round trip from the smallest component we
  can build (hand-written WAT), so the guest language's cost shows apart
  from fabric's;
* ``fabric-direct-py``: the componentize-py component connecting to the
  database itself on every invocation, through an egress rule, with the
  same password authentication as the other direct baselines;
* ``fabric-sql-py`` / ``fabric-sql-wat``: the same two guests reaching the
  dbpool service through the typed ``fabric:dbpool/sql`` import instead of a
  socket (the dbbench source built against the world ``sql-command``; a
  hand-written WAT component importing the interface);
* ``fabric-sql-py-reuse``: ``fabric-sql-py`` in reused instances, each keeping
  its import connection open between invocations;
* ``fabric-mysqldoor-py`` (MariaDB only): the component of ``fabric-direct-py``
  with unmodified PyMySQL, connecting per invocation to the dbpool service's
  MySQL front door on the workload's virtual port 3306 instead of to MariaDB
  (password login against the front door, the statement on a pooled
  connection);
* ``fabric-direct-py-reuse`` / ``fabric-mysqldoor-py-reuse`` (MariaDB only):
  those two in reused instances: PyMySQL still connects, logs in, runs the
  statement, commits and closes on every invocation, but the instance is
  warm, so the comparison of the two connections is not buried under a
  fresh instance's start-up.

Each contender runs in a workload of its own process-wide fabric, started
once per database and shared by the contenders of that database.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from benches.baselines import POOL_SIZE
from benches.errors import ContenderSkipped
from benches.registry import Registry
from fabric.build import BuildError, build_wat_guest
from fabric.guests import DBPOOL_SERVICE, dbbench, dbbench_sql
from fabric.workload import manifest_from_dict
from fabric.workload.runtime import Fabric, WorkloadRuntime

ROOT = Path(__file__).resolve().parent.parent
WAT_SELECT1 = ROOT / "tests" / "guests" / "wat" / "dbpool_select1.wat"
WAT_SQL_SELECT1 = ROOT / "tests" / "guests" / "wat" / "sql_select1.wat"
DBPOOL_PORT = 7000
MYSQL_DOOR_PORT = 3306  # the front door's virtual port (the workload's own loopback)
MYSQL_DOOR_USER = "bench"
EGRESS_NAME = "db.internal"
#: the reused component's pool: one warm instance per concurrent invocation
REUSE = {"max_invocations": 100_000, "pool_size": 64, "idle": "60s"}


class _SharedFabric:
    """One running fabric per database kind, shared by that kind's contenders."""

    def __init__(self) -> None:
        self.fabrics: dict[str, Fabric] = {}
        self.users: dict[str, int] = {}
        self.lock = asyncio.Lock()
        self.direct: dict[str, list[str]] = {}
        self.door_password = secrets.token_hex(12)

    async def acquire(self, env: Any, kind: str) -> WorkloadRuntime:
        async with self.lock:
            fab = self.fabrics.get(kind)
            if fab is None:
                fab = await self._start(env, kind)
                self.fabrics[kind] = fab
            self.users[kind] = self.users.get(kind, 0) + 1
            return fab.workloads[f"bench-{kind}"]

    async def release(self, kind: str) -> None:
        async with self.lock:
            self.users[kind] -= 1
            if self.users[kind] == 0:
                fab = self.fabrics.pop(kind)
                await fab.stop()

    async def _start(self, env: Any, kind: str) -> Fabric:
        if kind == "pg":
            t = await env.postgres()
            db = {"kind": "postgres"}
            default_port = 5432
        else:
            t = await env.mariadb()
            db = {"kind": "mysql"}
            default_port = 3306
        db.update(
            host=t.host,
            port=t.port,
            user=t.user,
            password=t.password,
            database=t.database,
            min_size=4,
            max_size=POOL_SIZE,
            acquire_timeout=30.0,
        )
        self.direct[kind] = [EGRESS_NAME, str(default_port), t.user, t.password, t.database]
        components: list[dict[str, Any]] = []
        try:
            py = await asyncio.to_thread(dbbench)
            components.append({"name": "py", "wasm": str(py), "concurrency": 256, "queue": 4096})
            components.append(
                {
                    "name": "py-reuse",
                    "wasm": str(py),
                    "concurrency": 256,
                    "queue": 4096,
                    "reuse": REUSE,
                }
            )
        except BuildError as e:
            raise ContenderSkipped(f"cannot build the dbbench guest: {e}") from e
        try:
            sql = await asyncio.to_thread(dbbench_sql)
            components.append({"name": "sql", "wasm": str(sql), "concurrency": 256, "queue": 4096})
            components.append(
                {
                    "name": "sql-reuse",
                    "wasm": str(sql),
                    "concurrency": 256,
                    "queue": 4096,
                    "reuse": REUSE,
                }
            )
        except BuildError:
            pass  # fabric-sql-py reports itself skipped
        for name, wat_path in (("wat", WAT_SELECT1), ("sqlwat", WAT_SQL_SELECT1)):
            if wat_path.exists():
                wat = await asyncio.to_thread(build_wat_guest, wat_path)
                components.append(
                    {"name": name, "wasm": str(wat), "concurrency": 256, "queue": 4096}
                )
        config: dict[str, Any] = {"port": DBPOOL_PORT, "databases": {kind: db}}
        ports = [DBPOOL_PORT]
        if kind == "mysql":
            users = {MYSQL_DOOR_USER: {"password": self.door_password}}
            config["mysql"] = {"port": MYSQL_DOOR_PORT, "users": users}
            ports.append(MYSQL_DOOR_PORT)
        raw = {
            "workloads": [
                {
                    "name": f"bench-{kind}",
                    "services": [
                        {
                            "name": "dbpool",
                            "native": DBPOOL_SERVICE,
                            "ports": ports,
                            "config": config,
                        }
                    ],
                    "components": components,
                    "egress": [
                        {"dest": EGRESS_NAME, "port": default_port, "to": f"{t.host}:{t.port}"}
                    ],
                }
            ]
        }
        manifest = manifest_from_dict(raw, path="<bench>", base_dir=str(ROOT))
        fab = Fabric(manifest, emit=lambda line: None)
        await fab.start()
        return fab


SHARED = _SharedFabric()


class _Invocation:
    group = "fabric"
    component = "py"

    def __init__(self, env: Any, kind: str) -> None:
        self.env = env
        self.kind = kind
        self.workload: WorkloadRuntime | None = None
        self.args: list[str] = []

    async def setup(self) -> None:
        self.workload = await SHARED.acquire(self.env, self.kind)
        if self.component not in self.workload.components:
            await SHARED.release(self.kind)
            self.workload = None
            raise ContenderSkipped(f"component {self.component!r} is not available")
        self.args = self.make_args()

    def make_args(self) -> list[str]:
        return ["pooled", str(DBPOOL_PORT), self.kind, "SELECT 1"]

    async def op(self) -> None:
        assert self.workload is not None
        result = await self.workload.invoke(self.component, None, self.args)
        if result["exit_code"] != 0:
            raise RuntimeError(f"guest failed: {result['stderr'][-300:]}")

    async def teardown(self) -> None:
        if self.workload is not None:
            await SHARED.release(self.kind)
            self.workload = None


class PooledPython(_Invocation):
    def __init__(self, env: Any, kind: str) -> None:
        super().__init__(env, kind)
        self.name = "fabric-dbpool-py"
        self.description = "componentize-py component, pooled connection via dbpool"


class PooledPythonReuse(_Invocation):
    component = "py-reuse"

    def __init__(self, env: Any, kind: str) -> None:
        super().__init__(env, kind)
        self.name = "fabric-dbpool-py-reuse"
        self.description = (
            "componentize-py component in a reused instance, dbpool connection kept open"
        )

    def make_args(self) -> list[str]:
        return ["pooled-keep", str(DBPOOL_PORT), self.kind, "SELECT 1"]


class PooledWat(_Invocation):
    component = "wat"

    def __init__(self, env: Any, kind: str) -> None:
        super().__init__(env, kind)
        self.name = "fabric-dbpool-wat"
        self.description = "hand-written WAT component, pooled connection via dbpool"

    def make_args(self) -> list[str]:
        return [str(DBPOOL_PORT), self.kind]


class DirectPython(_Invocation):
    def __init__(self, env: Any, kind: str) -> None:
        super().__init__(env, kind)
        self.name = "fabric-direct-py"
        self.description = "componentize-py component connecting itself (egress, password auth)"

    def make_args(self) -> list[str]:
        mode = "pg-direct" if self.kind == "pg" else "mysql-direct"
        return [mode, *SHARED.direct[self.kind], "SELECT 1"]


class MySQLDoorPython(_Invocation):
    def __init__(self, env: Any, kind: str) -> None:
        super().__init__(env, kind)
        self.name = "fabric-mysqldoor-py"
        self.description = (
            "componentize-py component, unmodified PyMySQL through dbpool's MySQL front door"
        )

    def make_args(self) -> list[str]:
        door = ["127.0.0.1", str(MYSQL_DOOR_PORT), MYSQL_DOOR_USER, SHARED.door_password]
        return ["mysql-direct", *door, self.kind, "SELECT 1"]


class DirectPythonReuse(DirectPython):
    component = "py-reuse"

    def __init__(self, env: Any, kind: str) -> None:
        super().__init__(env, kind)
        self.name = "fabric-direct-py-reuse"
        self.description = (
            "componentize-py component in a reused instance, PyMySQL connecting itself"
            " (egress, password auth) on every invocation"
        )


class MySQLDoorPythonReuse(MySQLDoorPython):
    component = "py-reuse"

    def __init__(self, env: Any, kind: str) -> None:
        super().__init__(env, kind)
        self.name = "fabric-mysqldoor-py-reuse"
        self.description = (
            "componentize-py component in a reused instance, unmodified PyMySQL connecting"
            " through dbpool's MySQL front door on every invocation"
        )


class SqlPython(_Invocation):
    component = "sql"

    def __init__(self, env: Any, kind: str) -> None:
        super().__init__(env, kind)
        self.name = "fabric-sql-py"
        self.description = "componentize-py component, pooled connection via the typed sql import"


class SqlPythonReuse(_Invocation):
    component = "sql-reuse"

    def __init__(self, env: Any, kind: str) -> None:
        super().__init__(env, kind)
        self.name = "fabric-sql-py-reuse"
        self.description = (
            "componentize-py component in a reused instance, typed sql import connection kept"
        )

    def make_args(self) -> list[str]:
        return ["pooled-keep", str(DBPOOL_PORT), self.kind, "SELECT 1"]


class SqlWat(PooledWat):
    component = "sqlwat"

    def __init__(self, env: Any, kind: str) -> None:
        super().__init__(env, kind)
        self.name = "fabric-sql-wat"
        self.description = "hand-written WAT component, pooled connection via the typed sql import"


def register(registry: Registry) -> None:
    for scenario, kind in (("pg-select1", "pg"), ("mysql-select1", "mysql")):
        registry.add_contender(scenario, lambda env, k=kind: PooledPython(env, k))
        registry.add_contender(scenario, lambda env, k=kind: PooledPythonReuse(env, k))
        registry.add_contender(scenario, lambda env, k=kind: PooledWat(env, k))
        registry.add_contender(scenario, lambda env, k=kind: DirectPython(env, k))
        registry.add_contender(scenario, lambda env, k=kind: SqlPython(env, k))
        registry.add_contender(scenario, lambda env, k=kind: SqlPythonReuse(env, k))
        registry.add_contender(scenario, lambda env, k=kind: SqlWat(env, k))
    registry.add_contender("mysql-select1", lambda env: MySQLDoorPython(env, "mysql"))
    registry.add_contender("mysql-select1", lambda env: DirectPythonReuse(env, "mysql"))
    registry.add_contender("mysql-select1", lambda env: MySQLDoorPythonReuse(env, "mysql"))
