"""``fabric demo`` end to end: real PostgreSQL, real component, files written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fabric.postgres import free_port


def demo(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    out = tmp_path / "results"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "fabric.cli",
            "demo",
            "--invocations",
            "20",
            "--direct",
            "5",
            "--concurrency",
            "2",
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return p, json.loads((out / "results.json").read_text())


def test_demo_against_the_local_postgres(tmp_path: Path) -> None:
    p, result = demo(tmp_path, "--pg-port", "5432")
    assert "using the server at 127.0.0.1:5432" in p.stdout
    assert result["auth"] == "the server's own"
    paths = {path["name"]: path for path in result["paths"]}
    # Each path runs its count one at a time (latency), then again concurrently (throughput).
    assert paths["pooled, fresh instance"]["invocations"] == 2 * 20
    assert paths["connect per invocation"]["invocations"] == 2 * 5
    assert paths["pooled, reused instance"]["invocations"] == 2 * 20
    assert paths["typed import, fresh instance"]["invocations"] == 2 * 20
    assert paths["typed import, reused instance"]["invocations"] == 2 * 20
    assert all(path["errors"] == 0 for path in paths.values())
    assert all(path["throughput"] > 0 and path["concurrency"] == 2 for path in paths.values())
    assert result["speedup_p50"] > 0


def test_demo_starts_a_throwaway_scram_postgres_by_default(tmp_path: Path) -> None:
    p, result = demo(tmp_path)
    assert "started a throwaway server" in p.stdout
    assert result["auth"] == "password (scram-sha-256)"
    assert all(path["errors"] == 0 for path in result["paths"])
    assert "pooled, fresh instance:" in p.stdout and "pooled, reused instance:" in p.stdout
    assert "p50 against connecting per invocation" in p.stdout


def test_demo_starts_a_throwaway_postgres_when_none_answers(tmp_path: Path) -> None:
    port = free_port()
    p, result = demo(tmp_path, "--pg-port", str(port))
    assert f"started a throwaway server at 127.0.0.1:{port}" in p.stdout
    assert result["auth"].startswith("password")
    assert all(path["errors"] == 0 for path in result["paths"])
