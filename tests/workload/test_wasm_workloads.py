"""Workloads with wasm guests: the cron pattern, composition, invocations, drain."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fabric.engine import Err, InstanceLimitReached, Ok
from fabric.runtime import Runtime
from fabric.workload import Overloaded, State, UnfilledImports, loads_manifest
from fabric.workload.runtime import Fabric


def manifest(text: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "fabric.toml"
    path.write_text(text)
    return loads_manifest(text, path=str(path), base_dir=str(tmp_path))


async def test_cron_service_calls_component_export(
    runtime: Runtime, cron_service_guest: Path, job_guest: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    m = manifest(
        f"""
[[workloads]]
name = "cron"
[[workloads.services]]
name = "scheduler"
wasm = "{cron_service_guest}"
args = ["3", "20", "ok:a", "err:b", "ok:c"]
restart = {{ mode = "never" }}
[[workloads.components]]
name = "job"
wasm = "{job_guest}"
[[workloads.links]]
importer = "scheduler"
interface = "fabric:guests/job"
component = "job"
""",
        tmp_path,
    )
    fabric = Fabric(m, runtime=runtime, emit=lines.append)
    await fabric.start()
    try:
        wl = fabric.workloads["cron"]
        await asyncio.wait_for(wl.supervisor.wait_for("scheduler", State.STOPPED), 60)
    finally:
        await fabric.stop()
    out = [line.split("] ", 1)[1] for line in lines if line.startswith("[cron/scheduler]")]
    assert "run.0=ok:job-ok:a" in out
    assert "run.1=err:job-err:b" in out
    assert "run.2=ok:job-ok:c" in out
    # Every call was a fresh instance of the component: three invocations counted.
    status = fabric.status().workloads[0].components[0]
    assert status.invocations == 3


async def test_component_to_component_composition(
    runtime: Runtime, pipeline_guest: Path, job_guest: Path, tmp_path: Path
) -> None:
    m = manifest(
        f"""
[[workloads]]
name = "compose"
[[workloads.components]]
name = "pipeline"
wasm = "{pipeline_guest}"
[[workloads.components]]
name = "job"
wasm = "{job_guest}"
[[workloads.links]]
importer = "pipeline"
interface = "fabric:guests/job"
component = "job"
""",
        tmp_path,
    )
    fabric = Fabric(m, runtime=runtime, emit=lambda line: None)
    await fabric.start()
    try:
        wl = fabric.workloads["compose"]
        assert await wl.invoke("pipeline", "run", ["ok:x"]) == Ok("pipeline[job-ok:x#1|job-ok:x#2]")
        assert await wl.invoke("pipeline", "run", ["err:y"]) == Err("pipeline-err:job-err:y#1")
        # The JSON face of the same call, as `fabric invoke` prints it.
        assert await fabric.invoke("compose", "pipeline", "pipeline#run", ["ok:z"]) == {
            "ok": "pipeline[job-ok:z#1|job-ok:z#2]"
        }
    finally:
        await fabric.stop()


async def test_unfilled_import_refuses_to_start(
    runtime: Runtime, pipeline_guest: Path, tmp_path: Path
) -> None:
    m = manifest(
        f"""
[[workloads]]
name = "broken"
[[workloads.components]]
name = "pipeline"
wasm = "{pipeline_guest}"
""",
        tmp_path,
    )
    fabric = Fabric(m, runtime=runtime, emit=lambda line: None)
    with pytest.raises(UnfilledImports) as info:
        await fabric.start()
    assert "fabric:guests/job" in str(info.value)
    assert "pipeline" in str(info.value)


async def test_invocations_are_fresh_and_limited(
    runtime: Runtime, job_guest: Path, tmp_path: Path
) -> None:
    m = manifest(
        f"""
[[workloads]]
name = "jobs"
[[workloads.components]]
name = "job"
wasm = "{job_guest}"
concurrency = 2
queue = 1
""",
        tmp_path,
    )
    fabric = Fabric(m, runtime=runtime, emit=lambda line: None)
    await fabric.start()
    try:
        wl = fabric.workloads["jobs"]
        # No state survives between invocations: each sees its first call.
        assert await wl.invoke("job", "run", ["count"]) == Ok("count=1")
        assert await wl.invoke("job", "run", ["count"]) == Ok("count=1")
        # 2 running + 1 queued fit; the 4th is refused at once, not left hanging.
        slow = [asyncio.create_task(wl.invoke("job", "run", ["sleep:300"])) for _ in range(3)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await wl.invoke("job", "run", ["sleep:1"])
        assert [await t for t in slow] == [Ok("slept:300")] * 3
        status = fabric.status().workloads[0].components[0]
        assert status.rejected == 1
        assert status.invocations == 5
    finally:
        await fabric.stop()


async def test_instances_past_max_instances_are_refused_by_name(
    job_guest: Path, tmp_path: Path
) -> None:
    m = manifest(
        f"""
max_instances = 2
[[workloads]]
name = "jobs"
[[workloads.components]]
name = "job"
wasm = "{job_guest}"
concurrency = 8
""",
        tmp_path,
    )
    fabric = Fabric(m, emit=lambda line: None)  # its own runtime, sized by the manifest
    await fabric.start()
    try:
        assert fabric.runtime.engine.instance_limit == 2
        wl = fabric.workloads["jobs"]
        slow = [asyncio.create_task(wl.invoke("job", "run", ["sleep:300"])) for _ in range(2)]
        for _ in range(100):  # both instantiated, both sleeping
            await asyncio.sleep(0.01)
            if fabric.status().instances == 2:
                break
        report = fabric.status()
        assert (report.instances, report.instance_limit) == (2, 2)
        # the third finds no slot: a named error, not a guest trap, at once
        with pytest.raises(InstanceLimitReached, match="max_instances"):
            await wl.invoke("job", "run", ["count"])
        # the two running are not disturbed, and their slots come back
        assert [await t for t in slow] == [Ok("slept:300")] * 2
        assert fabric.status().instances == 0
        assert await wl.invoke("job", "run", ["count"]) == Ok("count=1")
        status = fabric.status().workloads[0].components[0]
        assert status.errors == 1
        assert status.invocations == 4
    finally:
        await fabric.stop()


async def test_drain_lets_inflight_invocations_finish(
    runtime: Runtime, job_guest: Path, tmp_path: Path
) -> None:
    m = manifest(
        f"""
grace = "10s"
[[workloads]]
name = "jobs"
[[workloads.components]]
name = "job"
wasm = "{job_guest}"
""",
        tmp_path,
    )
    fabric = Fabric(m, runtime=runtime, emit=lambda line: None)
    await fabric.start()
    wl = fabric.workloads["jobs"]
    inflight = asyncio.create_task(wl.invoke("job", "run", ["sleep:300"]))
    await asyncio.sleep(0.05)
    await fabric.stop()
    assert inflight.done()
    assert inflight.result() == Ok("slept:300")


async def test_workload_with_only_wasm_services_loads_on_start(
    runtime: Runtime, tmp_path: Path
) -> None:
    from fabric.workload.runtime import WorkloadRuntime
    from tests.reference.guests import net_guest

    net = net_guest()
    m = manifest(
        f"""
[[workloads]]
name = "svc-only"
[[workloads.services]]
name = "echo"
wasm = "{net}"
args = ["echo-server", "7"]
ports = [7]
""",
        tmp_path,
    )
    wl = WorkloadRuntime(m.workloads[0], runtime, emit=lambda line: None)
    await wl.start()  # no explicit load(): start loads what it needs
    try:
        await asyncio.wait_for(wl.supervisor.wait_for("echo", State.READY), 60)
        reader, writer = await wl.network.open_connection(7)
        writer.write(b"ping")
        writer.write_eof()
        assert await reader.read() == b"ping"
        writer.close()
    finally:
        await wl.stop()
