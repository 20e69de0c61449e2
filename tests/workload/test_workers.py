"""``fabric run --workers 2`` as processes: ingress spread over workers, routed
invocations, aggregated status, a killed worker restarted, draining on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

#: a native service answering every connection with the worker that runs it
WHOAMI = """
import asyncio
import os


class WhoAmI:
    def __init__(self, config):
        self.port = int(config.get("port", 8080))

    async def serve(self, ctx):
        async def answer(reader, writer):
            writer.write(f"{ctx.worker.index}/{ctx.worker.count} {os.getpid()}\\n".encode())
            await writer.drain()

        await ctx.network.start_server(answer, self.port)
        await asyncio.Event().wait()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fabric(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fabric.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


class Running:
    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        env: dict[str, str],
        port: int,
        log: Path,
        metrics_port: int = 0,
    ) -> None:
        self.proc = proc
        self.env = env
        self.port = port
        self.log = log
        self.metrics_port = metrics_port

    def status(self) -> dict[str, Any]:
        p = fabric("status", "--json", env=self.env)
        assert p.returncode == 0, p.stderr
        report: dict[str, Any] = json.loads(p.stdout)
        return report

    def wait_for(self, predicate: Any, what: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            report = self.status()
            if predicate(report):
                return report
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"{what}: {report['workers']}"
            time.sleep(0.05)


def write_manifest(
    tmp_path: Path, job_guest: Path, port: int, metrics_port: int = 0, cli_guest: Path | None = None
) -> Path:
    command = f'[[workloads.components]]\nname = "cli"\nwasm = "{cli_guest}"\n' if cli_guest else ""
    (tmp_path / "whoami.py").write_text(WHOAMI)
    manifest = tmp_path / "who.toml"
    manifest.write_text(
        f"""
grace = "20s"
python_path = ["."]
[metrics]
listen = "127.0.0.1:{metrics_port}"
[[workloads]]
name = "who"
[[workloads.services]]
name = "whoami"
native = "whoami:WhoAmI"
ports = [8080]
[[workloads.components]]
name = "job"
wasm = "{job_guest}"
[[workloads.ingress]]
host_port = {port}
port = 8080
{command}"""
    )
    return manifest


def start(
    tmp_path: Path, job_guest: Path, cli_guest: Path, workers: str = "2", **extra_env: str
) -> Running:
    port, metrics_port = free_port(), free_port()
    manifest = write_manifest(tmp_path, job_guest, port, metrics_port, cli_guest)
    env = dict(os.environ, FABRIC_CONTROL=str(tmp_path / "control.sock"), **extra_env)
    log = tmp_path / "fabric.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fabric.cli", "run", str(manifest), "--workers", workers],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 120
    while fabric("status", "--json", env=env).returncode != 0:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "fabric run --workers did not come up"
        time.sleep(0.2)
    return Running(proc, env, port, log, metrics_port)


@pytest.fixture
def running(tmp_path: Path, job_guest: Path, cli_guest: Path) -> Iterator[Running]:
    run = start(tmp_path, job_guest, cli_guest)
    yield run
    if run.proc.poll() is None:
        run.proc.send_signal(signal.SIGTERM)
        try:
            run.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait()


def whoami(port: int) -> tuple[str, int]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(100)
            assert chunk, data
            data += chunk
    slot, pid = data.decode().split()
    return slot, int(pid)


def test_ingress_connections_reach_every_worker(running: Running) -> None:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: whoami(running.port), range(200)))
    slots = {slot for slot, _ in answers}
    pids = {pid for _, pid in answers}
    assert slots == {"0/2", "1/2"}, answers[:10]
    assert len(pids) == 2
    report = running.status()
    assert {w["pid"] for w in report["workers"]} == pids
    assert running.proc.pid not in pids  # the parent holds no workload
    # the native service got every connection on the ingress fast path;
    # `fabric status` adds up the workers' ingress counters
    (rule,) = report["workloads"][0]["ingress"]
    assert rule["port"] == 8080 and rule["connections"] == rule["direct"] == 200
    per_worker = [w["report"]["workloads"][0]["ingress"][0] for w in report["workers"]]
    assert all(r["direct"] >= 1 for r in per_worker)


def test_invoke_and_status_across_workers(running: Running) -> None:
    def invoke(i: int) -> subprocess.CompletedProcess[str]:
        return fabric("invoke", "who", "job", "run", json.dumps([f"ok:{i}"]), env=running.env)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(invoke, range(8)))
    for i, p in enumerate(results):
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout) == {"ok": f"job-ok:{i}"}
    p = fabric("invoke", "who", "nosuch", env=running.env)
    assert p.returncode == 2 and "NotFound" in p.stderr and "nosuch" in p.stderr

    report = running.status()
    assert report["pid"] == running.proc.pid
    workers = report["workers"]
    assert [w["index"] for w in workers] == [0, 1]
    assert all(w["state"] == "ready" and w["restarts"] == 0 for w in workers)
    assert sum(w["routed"] for w in workers) == 9
    assert all(w["routed"] >= 1 for w in workers)  # routing spreads invocations
    (job,) = [c for c in report["workloads"][0]["components"] if c["name"] == "job"]
    per_worker = [w["report"]["workloads"][0]["components"][0] for w in workers]
    assert all(c["name"] == "job" for c in per_worker)
    assert job["invocations"] == sum(c["invocations"] for c in per_worker) == 8
    assert job["concurrency"] == 2 * per_worker[0]["concurrency"]
    (service,) = report["workloads"][0]["services"]
    assert service["state"] == "ready"

    human = fabric("status", env=running.env).stdout
    assert "2 workers" in human and "ready" in human and "job" in human


def _in_flight_worker(report: dict[str, Any]) -> bool:
    return any(w["in_flight"] >= 1 for w in report["workers"])


def test_killed_worker_fails_its_invocation_and_is_restarted(running: Running) -> None:
    slow = subprocess.Popen(
        [sys.executable, "-m", "fabric.cli", "invoke", "who", "job", "run", '["sleep:30000"]'],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=running.env,
    )
    report = running.wait_for(_in_flight_worker, "the slow invocation never started")
    (victim,) = [w for w in report["workers"] if w["in_flight"] >= 1]
    os.kill(victim["pid"], signal.SIGKILL)

    out, err = slow.communicate(timeout=30)
    assert slow.returncode == 2, (out, err)
    assert "WorkerLost" in err and "killed by SIGKILL" in err, err
    assert f"worker {victim['index']}" in err and "did not finish" in err

    def restarted(report: dict[str, Any]) -> bool:
        w = report["workers"][victim["index"]]
        return bool(w["state"] == "ready" and w["restarts"] == 1)

    report = running.wait_for(restarted, "the killed worker was not restarted")
    worker = report["workers"][victim["index"]]
    assert worker["pid"] not in (None, victim["pid"])
    assert worker["last_exit"] == "killed by SIGKILL"
    assert worker["lost"] == 1
    log = running.log.read_text()
    assert f"worker {victim['index']} (pid {victim['pid']}) killed by SIGKILL" in log
    assert f"worker {victim['index']} restarted" in log
    # both workers serve again
    for i in range(4):
        p = fabric("invoke", "who", "job", "run", json.dumps([f"ok:{i}"]), env=running.env)
        assert p.returncode == 0, p.stderr
    human = fabric("status", env=dict(running.env, COLUMNS="200")).stdout
    assert "killed by SIGKILL" in human


def test_sigterm_drains_every_worker(running: Running) -> None:
    slow = [
        subprocess.Popen(
            [sys.executable, "-m", "fabric.cli", "invoke", "who", "job", "run", '["sleep:1500"]'],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=running.env,
        )
        for _ in range(2)
    ]
    running.wait_for(
        lambda r: all(w["in_flight"] >= 1 for w in r["workers"]),
        "the invocations did not reach both workers",
    )
    pids = [w["pid"] for w in running.status()["workers"]]
    running.proc.send_signal(signal.SIGTERM)
    for p in slow:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert json.loads(out) == {"ok": "slept:1500"}
    assert running.proc.wait(timeout=60) == 0
    for pid in pids:  # no worker outlives its parent
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    log = running.log.read_text()
    assert "[worker 0]" not in log or "Traceback" not in log
    assert "fabric[worker 0]: stopping" in log and "fabric[worker 1]: stopping" in log


def test_refuses_a_host_port_in_use(tmp_path: Path, job_guest: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        manifest = write_manifest(tmp_path, job_guest, port)
        env = dict(os.environ, FABRIC_CONTROL=str(tmp_path / "c.sock"))
        p = fabric("run", str(manifest), "--workers", "2", env=env)
    assert p.returncode == 2
    assert f"ingress host port 127.0.0.1:{port} is in use" in p.stderr
    assert "Traceback" not in p.stderr


def test_workers_option_is_checked(tmp_path: Path) -> None:
    env = dict(os.environ)
    for bad in ("0", "-1", "many", "65"):
        p = fabric("run", str(tmp_path / "m.toml"), "--workers", bad, env=env)
        assert p.returncode == 2
        assert "expected 'auto' or a number of workers from 1 to 64" in p.stderr


def test_a_worker_that_cannot_start_stops_the_run(tmp_path: Path, job_guest: Path) -> None:
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(b"\0asm not a component")
    manifest = write_manifest(tmp_path, broken, free_port())
    env = dict(os.environ, FABRIC_CONTROL=str(tmp_path / "c.sock"))
    p = fabric("run", str(manifest), "--workers", "2", env=env)
    assert p.returncode == 2, p.stderr
    assert "fabric run: worker 0 did not start: it exited with status 2" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "c.sock").exists()


def test_workers_stop_when_their_parent_is_killed(running: Running) -> None:
    pids = [w["pid"] for w in running.status()["workers"]]
    running.proc.kill()
    running.proc.wait()
    deadline = time.monotonic() + 60
    for pid in pids:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, f"worker {pid} outlived its parent"
            time.sleep(0.05)
    assert "fabric[worker 0]: stopping" in running.log.read_text()
    control = running.log.read_text().split("fabric[worker 0]: running who; control socket ")[1]
    assert not Path(control.split()[0]).parent.exists()  # the last worker removed it


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_endpoint_adds_the_workers_up(running: Running) -> None:
    for i in range(4):
        p = fabric("invoke", "who", "job", "run", json.dumps([f"ok:{i}"]), env=running.env)
        assert p.returncode == 0, p.stderr
    wanted = 'fabric_component_invocations_total{component="job",outcome="ok",workload="who"} 4.0'
    deadline = time.monotonic() + 30
    while True:
        status, text = http_get(running.metrics_port, "/metrics")
        assert status == 200
        if wanted in text:
            break
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    assert 'fabric_component_latency_seconds_count{component="job",workload="who"} 4.0' in text
    assert http_get(running.metrics_port, "/readyz") == (200, "ready\n")
    log = running.log.read_text()
    assert f"fabric: metrics on http://127.0.0.1:{running.metrics_port}/metrics" in log
    assert "fabric[worker 0]: metrics on" not in log  # only the parent serves them


def test_a_command_streams_its_output_through_the_parent(running: Running) -> None:
    for _ in range(2):  # both workers (routing takes turns when idle)
        p = fabric("invoke", "who", "cli", "run", '["streams", "100000"]', env=running.env)
        assert p.returncode == 0, p.stderr
        assert p.stderr == "stderr=hello from stderr\n"
        assert p.stdout.startswith("stdout=hello from stdout\nstdin_len=0\n")
        assert ("0123456789abcdef" * 6250) in p.stdout
    p = fabric("invoke", "who", "cli", "run", '["exit", "3"]', env=running.env)
    assert (p.returncode, p.stdout) == (1, "exiting=3\n")
    assert all(w["routed"] >= 1 for w in running.status()["workers"])


def _control_exchange(path: str, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send requests over one control connection; the replies, in order."""
    replies = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(60)
        conn.connect(path)
        stream = conn.makefile("rwb")
        for line in lines:
            stream.write(json.dumps(line).encode() + b"\n")
            stream.flush()
            replies.append(json.loads(stream.readline()))
    return replies


def _job_invocations(report: dict[str, Any]) -> list[int]:
    return [
        w["report"]["workloads"][0]["components"][0]["invocations"] for w in report["workers"]
    ]


def test_a_control_connection_is_served_by_one_worker(running: Running) -> None:
    before = running.status()
    invoke = {"type": "invoke", "workload": "who", "component": "job", "export": "run"}
    big = "x" * 100_000  # a first request too long to pass along: the parent relays it
    replies = _control_exchange(
        running.env["FABRIC_CONTROL"],
        [{**invoke, "args": [f"ok:{i}"]} for i in range(3)]
        + [{"type": "status"}, {**invoke, "args": ["err:no"]}],
    )
    assert [r["result"] for r in replies[:3]] == [{"ok": f"job-ok:{i}"} for i in range(3)]
    assert replies[3]["type"] == "status-reply"
    assert replies[4]["result"] == {"err": "job-err:no"}
    (relayed,) = _control_exchange(running.env["FABRIC_CONTROL"], [{**invoke, "args": [big]}])
    assert relayed["result"] == {"err": f"job-unknown:{big}"}

    after = running.status()
    # the connection went to one worker, which ran its four invocations
    pairs = zip(_job_invocations(after), _job_invocations(before), strict=True)
    gained = [a - b for a, b in pairs]
    assert sorted(gained) in ([0, 5], [1, 4]), gained
    assert sum(w["routed"] for w in after["workers"]) - sum(
        w["routed"] for w in before["workers"]
    ) == 2  # one connection handed over, one request relayed
    assert all(w["in_flight"] == 0 for w in after["workers"])  # both connections are over


def test_the_parent_relays_when_handing_over_is_off(
    tmp_path: Path, job_guest: Path, cli_guest: Path
) -> None:
    run = start(tmp_path, job_guest, cli_guest, FABRIC_WORKERS_HANDOFF="0")
    try:
        for i in range(4):
            p = fabric("invoke", "who", "job", "run", json.dumps([f"ok:{i}"]), env=run.env)
            assert p.returncode == 0, p.stderr
            assert json.loads(p.stdout) == {"ok": f"job-ok:{i}"}
        p = fabric("invoke", "who", "cli", "run", '["streams", "10"]', env=run.env)
        assert p.returncode == 0 and p.stderr == "stderr=hello from stderr\n", p.stderr
        workers = run.status()["workers"]
        assert sum(w["routed"] for w in workers) == 5
        assert all(w["routed"] >= 1 for w in workers)
    finally:
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=60) == 0
