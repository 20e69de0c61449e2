"""The metrics endpoint and probes of a running ``fabric run``, scraped over real HTTP.

A workload with the dbpool service (a real PostgreSQL behind its pool) and the
hand-written WAT component that runs ``SELECT 1`` through the typed
``fabric:dbpool/sql`` import, once fresh per invocation and once reused; a
second workload with a native service that crashes on request.  The scrape
is parsed with ``prometheus_client``'s own parser.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.guestlib import ROOT, wat_guest

PORT = 7432  # dbpool's port on the workload's virtual loopback


def fabric(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fabric.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


class Running:
    def __init__(self, proc: subprocess.Popen[bytes], env: dict[str, str], url: str) -> None:
        self.proc = proc
        self.env = env
        self.url = url

    def get(self, path: str, accept: str | None = None) -> tuple[int, str, str]:
        """(status, content type, body) of ``GET path``."""
        request = urllib.request.Request(self.url + path)
        if accept is not None:
            request.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, reply.headers["content-type"], reply.read().decode()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.headers["content-type"], error.read().decode()

    def scrape(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Every sample of ``/metrics``: sample name -> sorted labels -> value."""
        status, _, body = self.get("/metrics")
        assert status == 200, body
        samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                key = tuple(sorted(sample.labels.items()))
                samples.setdefault(sample.name, {})[key] = sample.value
        return samples

    def wait_ready(self, want: int) -> str:
        """Poll ``/readyz`` until it answers ``want``; the bound guards against hangs only."""
        deadline = time.monotonic() + 120
        while True:
            status, _, body = self.get("/readyz")
            if status == want:
                return body
            assert self.proc.poll() is None, "fabric run exited"
            assert time.monotonic() < deadline, f"/readyz still {status}: {body}"
            time.sleep(0.05)


@pytest.fixture
def run_fabric(tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(manifest_text: str) -> Running:
        manifest = tmp_path / f"fabric{len(procs)}.toml"
        manifest.write_text(manifest_text)
        env = dict(os.environ, FABRIC_CONTROL=str(tmp_path / f"control{len(procs)}.sock"))
        log = tmp_path / f"fabric{len(procs)}.log"
        with log.open("w") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fabric.cli", "run", str(manifest)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
            )
        procs.append(proc)
        deadline = time.monotonic() + 60
        while (found := re.search(r"metrics on (http://\S+)/metrics", log.read_text())) is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no metrics address printed"
            time.sleep(0.05)
        return Running(proc, env, found.group(1))

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def shop_manifest(wasm: Path, app: str, flag: Path) -> str:
    return f"""
python_path = ["{ROOT}"]
grace = "5s"

[metrics]
listen = "127.0.0.1:0"

[[workloads]]
name = "shop"

[[workloads.services]]
name = "dbpool"
native = "services.dbpool.service:DbPoolService"
ports = [{PORT}]
[workloads.services.config]
port = {PORT}
[workloads.services.config.databases.pg]
kind = "postgres"
user = "postgres"
database = "test"
min_size = 1
max_size = 2
application_name = "{app}"

[[workloads.components]]
name = "select"
wasm = "{wasm}"

[[workloads.components]]
name = "warm-select"
wasm = "{wasm}"
reuse = {{ max_invocations = 100, pool_size = 2, idle = "1h" }}

[[workloads]]
name = "probe"

[[workloads.services]]
name = "flag"
native = "tests.workload.probe_service:FlagService"
config = {{ flag = "{flag}" }}
restart = {{ max_restarts = 0 }}
"""


def k(**labels: str) -> tuple[tuple[str, str], ...]:
    """A sample's labels as `Running.scrape` keys them."""
    return tuple(sorted(labels.items()))


def invoke(running: Running, component: str) -> None:
    p = fabric("invoke", "shop", component, "run", f'["{PORT}", "pg"]', env=running.env)
    assert p.returncode == 0, p.stderr


def test_scrape_follows_invocations_pools_and_services(run_fabric, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = f"fabric-metrics-{uuid.uuid4().hex[:8]}"
    running = run_fabric(shop_manifest(wat_guest("sql_select1"), app, tmp_path / "flag"))
    assert running.get("/healthz")[:1] == (200,)
    assert running.wait_ready(200) == "ready\n"
    for _ in range(3):
        invoke(running, "select")
    for _ in range(2):
        invoke(running, "warm-select")

    m = running.scrape()
    sel = {"workload": "shop", "component": "select"}
    warm = {"workload": "shop", "component": "warm-select"}
    invocations = m["fabric_component_invocations_total"]
    assert invocations[k(**sel, outcome="ok")] == 3
    assert invocations[k(**sel, outcome="error")] == 0
    assert invocations[k(**sel, outcome="rejected")] == 0
    assert invocations[k(**warm, outcome="ok")] == 2
    assert m["fabric_component_latency_seconds_count"][k(**sel)] == 3
    assert m["fabric_component_latency_seconds_bucket"][k(**sel, le="+Inf")] == 3
    assert m["fabric_component_latency_seconds_sum"][k(**sel)] > 0
    assert m["fabric_component_in_flight"][k(**sel)] == 0
    assert m["fabric_component_queued"][k(**sel)] == 0
    assert m["fabric_component_concurrency"][k(**sel)] == 16

    # the reused component: one instance started, the second invocation reused it
    assert m["fabric_component_instances_started_total"][k(**warm)] == 1
    assert m["fabric_component_instances_reused_total"][k(**warm)] == 1
    assert m["fabric_component_instances"][k(**warm, state="warm")] == 1
    assert m["fabric_component_instances"][k(**warm, state="busy")] == 0
    retired = m["fabric_component_instances_retired_total"]
    assert retired[k(**warm, reason="trap")] == 0
    assert {dict(labels)["component"] for labels in retired} == {"warm-select"}

    svc = {"workload": "shop", "service": "dbpool"}
    assert m["fabric_service_up"][k(**svc, kind="native")] == 1
    assert m["fabric_service_restarts_total"][k(**svc, kind="native")] == 0
    assert m["fabric_service_state"][k(**svc, kind="native", state="ready")] == 1

    # the dbpool service's own families: five leases through the typed import
    pool = {**svc, "database": "pg", "kind": "postgres"}
    assert m["fabric_dbpool_pool_leases_total"][k(**pool)] == 5
    assert m["fabric_dbpool_local_sessions_opened_total"][k(**svc)] == 5
    assert m["fabric_dbpool_local_sessions"][k(**svc)] == 0
    assert m["fabric_dbpool_pool_size_limit"][k(**pool, bound="max")] == 2
    assert m["fabric_dbpool_pool_connections"][k(**pool, state="in_use")] == 0
    assert m["fabric_dbpool_pool_connections_opened_total"][k(**pool)] >= 1
    assert m["fabric_dbpool_clients_connected"][k(**svc)] == 0

    # a service without metrics(): its published numbers, untyped
    flag = {"workload": "probe", "service": "flag"}
    assert m["fabric_service_stat"][k(**flag, stat="nested.ok")] == 1
    assert m["fabric_service_stat"][k(**flag, stat="polls")] >= 1
    assert m["fabric_ready"][()] == 1
    assert m["process_resident_memory_bytes"][()] > 0

    # OpenMetrics when the scraper asks for it
    status, content_type, body = running.get(
        "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")
    assert "fabric_component_invocations_total{" in body


def test_readiness_follows_a_failed_service(run_fabric, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    flag = tmp_path / "flag"
    running = run_fabric(
        f"""
python_path = ["{ROOT}"]
[metrics]
listen = "127.0.0.1:0"
[[workloads]]
name = "probe"
[[workloads.services]]
name = "flag"
native = "tests.workload.probe_service:FlagService"
config = {{ flag = "{flag}" }}
restart = {{ max_restarts = 0 }}
"""
    )
    running.wait_ready(200)
    flag.touch()
    reasons = running.wait_ready(503)
    assert reasons.startswith("workload probe: service flag is failed ("), reasons
    assert running.get("/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    m = running.scrape()
    svc = {"workload": "probe", "service": "flag", "kind": "native"}
    assert m["fabric_service_up"][k(**svc)] == 0
    assert m["fabric_service_state"][k(**svc, state="failed")] == 1
    assert m["fabric_service_exits_total"][k(**svc)] == 1
    assert m["fabric_ready"][()] == 0
