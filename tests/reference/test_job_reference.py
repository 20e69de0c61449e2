"""The ``job`` component (world job-component) invoked directly by the wasmtime CLI.

``wasmtime run --invoke 'fabric:guests/job.run("...")'`` calls the export once
in a fresh instance and prints the result in WAVE syntax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Unpack

import pytest

from tests.reference.wasmtime_cli import TRAP_EXIT_CODE, RunOptions, run_guest

pytestmark = pytest.mark.slow


def invoke(job_wasm: Path, arg: str, **options: Unpack[RunOptions]) -> tuple[int, str, str]:
    options["invoke"] = f'fabric:guests/job.run("{arg}")'
    result = run_guest(job_wasm, **options)
    return result.returncode, result.stdout.strip(), result.stderr


@pytest.mark.parametrize(
    ("arg", "printed"),
    [
        ("ok:hello", 'ok("job-ok:hello")'),
        ("err:broken", 'err("job-err:broken")'),
        ("count", 'ok("count=1")'),  # a fresh instance per invocation
        ("sleep:20", 'ok("slept:20")'),
        ("bogus", 'err("job-unknown:bogus")'),
    ],
)
def test_job_result(job_wasm: Path, arg: str, printed: str) -> None:
    returncode, stdout, stderr = invoke(job_wasm, arg)
    assert returncode == 0, stderr
    assert stdout == printed


def test_job_sees_its_environment(job_wasm: Path) -> None:
    returncode, stdout, _ = invoke(job_wasm, "env:JOB_NAME", env={"JOB_NAME": "nightly"})
    assert (returncode, stdout) == (0, 'ok("env:JOB_NAME=nightly")')


def test_job_talks_to_a_loopback_service(job_wasm: Path, host_echo_server: int) -> None:
    returncode, stdout, stderr = invoke(job_wasm, f"echo:{host_echo_server}:ping")
    assert returncode == 0, stderr
    assert stdout == 'ok("echo:ping")'


def test_job_trap(job_wasm: Path) -> None:
    returncode, stdout, stderr = invoke(job_wasm, "trap")
    assert returncode == TRAP_EXIT_CODE
    assert stdout == ""
    assert "RuntimeError: job trapped on 'trap'" in stderr
