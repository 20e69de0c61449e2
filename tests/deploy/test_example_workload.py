"""The Kubernetes example's workload, run here against the machine's PostgreSQL.

The manifest of deploy/kubernetes/fabric.toml with only what differs outside
a cluster changed (the database host and user, the secret's path, the
component's source path, the listen addresses; no ingress rule, whose host
port would have to be free): the `visits` component (deploy/components) is
built from source and counts visits through the dbpool service, and the
probes answer as the Deployment expects.
"""

from __future__ import annotations

import asyncio
import tomllib
import urllib.request
import uuid
from pathlib import Path

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from fabric.runtime import Runtime
from fabric.workload import manifest_from_dict
from fabric.workload.runtime import Fabric
from tests.guestlib import ROOT

DEPLOY = ROOT / "deploy"


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return reply.status, reply.read()


async def test_visits_through_dbpool_and_the_probes(runtime: Runtime, tmp_path: Path) -> None:
    raw = tomllib.loads((DEPLOY / "kubernetes" / "fabric.toml").read_text())
    raw["metrics"]["listen"] = "127.0.0.1:0"
    (workload,) = raw["workloads"]
    del workload["ingress"]
    config = workload["services"][0]["config"]
    secret = tmp_path / "dbpool-secret"
    secret.write_text("not-a-real-secret\n")
    config["auth"]["secret_file"] = str(secret)
    app = f"fabric-k8s-{uuid.uuid4().hex[:8]}"
    config["databases"]["app"].update(
        host="127.0.0.1", user="postgres", database="test", application_name=app
    )
    workload["components"][0]["python"] = str(DEPLOY / "components" / "visits")
    fabric = Fabric(manifest_from_dict(raw, path="fabric.toml"), runtime=runtime)
    path = f"/page-{uuid.uuid4().hex[:8]}"
    try:
        await fabric.start()
        assert fabric.metrics is not None
        url = fabric.metrics.url
        assert await asyncio.to_thread(get, url + "/readyz") == (200, b"ready\n")
        for n in (1, 2):
            result = await fabric.invoke("web", "visits", None, ["hit", path])
            assert result == {"exit_code": 0, "stdout": f"{path}\t{n}\n", "stderr": ""}
        top = await fabric.invoke("web", "visits", None, ["top"])
        assert top["exit_code"] == 0
        result = await fabric.invoke("web", "visits", None, ["bogus"])
        assert result["exit_code"] != 0 and "usage: hit PATH | top" in result["stderr"]
        status, body = await asyncio.to_thread(get, url + "/metrics")
        assert status == 200
        outcomes = {
            s.labels["outcome"]: s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
            if s.name == "fabric_component_invocations_total"
        }
        # a command that exits non-zero returned: "ok" (errors are traps, deadlines, ...)
        assert outcomes == {"ok": 4, "error": 0, "rejected": 0}
    finally:
        await fabric.stop()
        conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database="test")
        try:
            await conn.execute("DELETE FROM fabric_visits WHERE path = $1", path)
        finally:
            await conn.close()
