"""``fabric run`` / ``status`` / ``invoke`` as processes, and SIGTERM draining."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


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


@pytest.fixture
def running(job_guest: Path, tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    manifest = tmp_path / "jobs.toml"
    manifest.write_text(
        f"""
grace = "20s"
[[workloads]]
name = "jobs"
[[workloads.components]]
name = "job"
wasm = "{job_guest}"
[[workloads.components]]
name = "warm-job"
wasm = "{job_guest}"
reuse = {{ max_invocations = 10, pool_size = 2, idle = "1h" }}
"""
    )
    env = dict(os.environ, FABRIC_CONTROL=str(tmp_path / "control.sock"))
    extra: tuple[str, ...] = getattr(request, "param", ())  # more `fabric run` arguments
    log = tmp_path / "fabric.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fabric.cli", "run", str(manifest), *extra],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 120
    while fabric("status", "--json", env=env).returncode != 0:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "fabric run did not come up"
        time.sleep(0.2)
    yield proc, env
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_invoke_and_status_against_running_fabric(running) -> None:  # type: ignore[no-untyped-def]
    _proc, env = running
    p = fabric("invoke", "jobs", "job", "run", '["ok:hello"]', env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"ok": "job-ok:hello"}
    p = fabric("invoke", "jobs", "job", "run", '["err:bad"]', env=env)
    assert json.loads(p.stdout) == {"err": "job-err:bad"}
    p = fabric("invoke", "jobs", "nosuch", env=env)
    assert p.returncode == 2
    assert "nosuch" in p.stderr and "Traceback" not in p.stderr
    report = json.loads(fabric("status", "--json", env=env).stdout)
    comp = report["workloads"][0]["components"][0]
    assert comp["name"] == "job"
    assert comp["invocations"] == 2
    assert comp["pool"] is None
    human = fabric("status", env=env)
    assert "job" in human.stdout


def test_status_shows_the_instance_pool(running) -> None:  # type: ignore[no-untyped-def]
    _proc, env = running
    for arg in ("ok:a", "ok:b", "trap"):
        p = fabric("invoke", "jobs", "warm-job", "run", json.dumps([arg]), env=env)
        assert (p.returncode == 0) == (arg != "trap"), p.stderr
    report = json.loads(fabric("status", "--json", env=env).stdout)
    (comp,) = [c for c in report["workloads"][0]["components"] if c["name"] == "warm-job"]
    assert comp["pool"] == {
        "max_invocations": 10,
        "pool_size": 2,
        "idle": 3600.0,
        "warm": 0,
        "busy": 0,
        "started": 1,
        "reused": 2,
        "retired": 1,
        "reasons": {"trap": 1},
    }
    human = fabric("status", env=env).stdout
    assert "warm-job" in human and "0/2" in human and "trap 1" in human


@pytest.mark.parametrize("running", [("--max-instances", "1")], indirect=True)
def test_max_instances_flag_bounds_the_live_instances(running) -> None:  # type: ignore[no-untyped-def]
    _proc, env = running
    report = json.loads(fabric("status", "--json", env=env).stdout)
    assert (report["instances"], report["instance_limit"]) == (0, 1)
    # a warm instance stays alive after its invocation and holds the one slot
    p = fabric("invoke", "jobs", "warm-job", "run", '["ok:a"]', env=env)
    assert p.returncode == 0, p.stderr
    p = fabric("invoke", "jobs", "job", "run", '["ok:b"]', env=env)
    assert p.returncode != 0
    assert "instance limit reached" in p.stderr and "--max-instances" in p.stderr
    assert "Traceback" not in p.stderr
    assert "instances: 1 of 1 alive" in fabric("status", env=env).stdout
    # the warm instance still serves
    p = fabric("invoke", "jobs", "warm-job", "run", '["ok:c"]', env=env)
    assert json.loads(p.stdout) == {"ok": "job-ok:c"}


def test_bad_max_instances_flag_is_refused(job_guest: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "jobs.toml"
    manifest.write_text(
        f'[[workloads]]\nname = "j"\n[[workloads.components]]\nname = "job"\nwasm = "{job_guest}"\n'
    )
    p = fabric("run", str(manifest), "--max-instances", "0", env=dict(os.environ))
    assert p.returncode == 2
    assert "--max-instances: expected an integer from 1 to 30000, got '0'" in p.stderr


def test_sigterm_drains_inflight_invocations(running) -> None:  # type: ignore[no-untyped-def]
    proc, env = running
    slow = subprocess.Popen(
        [sys.executable, "-m", "fabric.cli", "invoke", "jobs", "job", "run", '["sleep:1500"]'],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # Signal only once the invocation runs (a fixed sleep lost the race on a
    # loaded machine: the invoke client had not reached the fabric yet).
    deadline = time.monotonic() + 60
    while True:
        report = json.loads(fabric("status", "--json", env=env).stdout)
        (job,) = [c for c in report["workloads"][0]["components"] if c["name"] == "job"]
        if job["in_flight"] >= 1:
            break
        assert slow.poll() is None, slow.communicate()
        assert time.monotonic() < deadline, "the invocation never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, err
    assert json.loads(out) == {"ok": "slept:1500"}
    assert proc.wait(timeout=60) == 0
