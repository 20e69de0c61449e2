"""fabric.build: cached guest builds (componentize-py and WAT)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import wasmtime
import wasmtime.component

from fabric.build import (
    BUILD_LOG,
    WIT_DIR,
    BuildError,
    build_python_guest,
    build_wat_guest,
    cache_dir,
    stage_packages,
)
from tests.reference import guests as repo_guests

CORE_PREAMBLE = b"\0asm\x01\0\0\0"
COMPONENT_PREAMBLE = b"\0asm\x0d\0\x01\0"

HELLO_APP = textwrap.dedent(
    """
    import sys
    from wit_world import exports

    GREETING = "hello"

    class Run(exports.Run):
        def run(self) -> None:
            print(f"greeting={GREETING}", flush=True)
            print(f"args={','.join(sys.argv[1:])}", flush=True)
    """
)

# The legacy flat form `(memory $i "mem")` needs WAST_STRICT_COMPONENT_INDICES=0.
LEGACY_COMPONENT_WAT = """
(component
  (core module $m
    (memory (export "mem") 1)
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) i32.const 8)
    (func (export "len") (param i32 i32) (result i32) local.get 1))
  (core instance $i (instantiate $m))
  (func (export "len") (param "s" string) (result u32)
    (canon lift (core func $i "len") (memory $i "mem") (realloc (func $i "realloc")))))
"""


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("FABRIC_CACHE_DIR", str(root))
    return root


def build_log(cache: Path) -> list[dict[str, object]]:
    path = cache / "guests" / BUILD_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABRIC_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("FABRIC_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "fabric"


def test_shipped_wit_has_the_worlds() -> None:
    text = (WIT_DIR / "fabric.wit").read_text()
    assert "package fabric:guests;" in text
    for world in ("command", "cron-service", "job-component", "composer", "sql-command"):
        assert f"world {world} {{" in text
    packages = sorted(p.name for p in (WIT_DIR / "deps").iterdir() if p.is_dir())
    assert packages == ["cli", "clocks", "dbpool", "filesystem", "io", "random", "sockets"]
    dbpool = (WIT_DIR / "deps" / "dbpool" / "sql.wit").read_text()
    assert re.findall(r"^package (\S+);", dbpool, re.MULTILINE) == ["fabric:dbpool"]
    assert "interface sql {" in dbpool
    for package in (p for p in packages if p != "dbpool"):
        declared = {
            match
            for wit in (WIT_DIR / "deps" / package).glob("*.wit")
            for match in re.findall(r"^package (\S+);", wit.read_text(), re.MULTILINE)
        }
        assert declared == {f"wasi:{package}@0.2.0"}


# --- WAT -------------------------------------------------------------------


def test_wat_text_builds_once(private_cache: Path) -> None:
    first = build_wat_guest('(module (func (export "f") (result i32) i32.const 7))')
    assert first.parent == private_cache / "guests"
    assert first.read_bytes().startswith(CORE_PREAMBLE)
    mtime = first.stat().st_mtime_ns
    again = build_wat_guest('(module (func (export "f") (result i32) i32.const 7))')
    assert again == first
    assert again.stat().st_mtime_ns == mtime
    assert len(build_log(private_cache)) == 1
    other = build_wat_guest('(module (func (export "f") (result i32) i32.const 8))')
    assert other != first
    assert len(build_log(private_cache)) == 2


def test_wat_file_runs(private_cache: Path, tmp_path: Path) -> None:
    source = tmp_path / "answer.wat"
    source.write_text('(module (func (export "answer") (result i32) i32.const 42))')
    built = build_wat_guest(source)
    assert built.name.startswith("answer-")
    store = wasmtime.Store()
    module = wasmtime.Module(store.engine, built.read_bytes())
    instance = wasmtime.Instance(store, module, [])
    answer = instance.exports(store)["answer"]
    assert isinstance(answer, wasmtime.Func)
    assert answer(store) == 42


def test_wat_component_with_legacy_indices(private_cache: Path) -> None:
    built = build_wat_guest(LEGACY_COMPONENT_WAT)
    binary = built.read_bytes()
    assert binary.startswith(COMPONENT_PREAMBLE)
    component = wasmtime.component.Component(wasmtime.Engine(), binary)
    assert "len" in component.type.exports(wasmtime.Engine())


def test_wat_error_carries_the_diagnostic(private_cache: Path) -> None:
    with pytest.raises(BuildError) as info:
        build_wat_guest('(module (func (export "f") (result i32) i32.const))')
    assert info.value.returncode == 1
    assert "expected" in info.value.stderr
    assert "<anon>:1:" in str(info.value)
    assert not list((private_cache / "guests").glob("*.wasm"))


def test_missing_wat_file(private_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="cannot read"):
        build_wat_guest(tmp_path / "absent.wat")


# --- staging third-party packages ------------------------------------------------


def test_stage_packages_copies_only_what_is_named(private_cache: Path) -> None:
    staged = stage_packages(["pymysql"])
    assert staged.parent == private_cache / "packages"
    assert sorted(p.name for p in staged.iterdir()) == ["pymysql"]
    assert (staged / "pymysql" / "__init__.py").is_file()
    assert not list(staged.rglob("*.pyc"))
    assert stage_packages(["pymysql"]) == staged


def test_stage_unknown_package(private_cache: Path) -> None:
    with pytest.raises(BuildError, match="not installed"):
        stage_packages(["no_such_package_for_fabric"])


# --- Python guests ------------------------------------------------------------


def test_python_guest_without_its_module(private_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no module 'app'"):
        build_python_guest(tmp_path)


def test_python_guest_unknown_world(private_cache: Path, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(HELLO_APP)
    with pytest.raises(BuildError) as info:
        build_python_guest(tmp_path, world="no-such-world")
    assert "no-such-world" in info.value.stderr
    assert "fabric:guests/job-component" in info.value.stderr  # the worlds it offers
    assert build_log(private_cache) == []
    assert not list((private_cache / "guests").glob("*.wasm*"))


@pytest.mark.slow
def test_python_guest_is_built_once_across_processes(private_cache: Path, tmp_path: Path) -> None:
    src = tmp_path / "hello"
    src.mkdir()
    (src / "app.py").write_text(HELLO_APP)
    script = (
        "import sys; from pathlib import Path; from fabric.build import build_python_guest; "
        "print(build_python_guest(Path(sys.argv[1])))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(src)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, FABRIC_CACHE_DIR=str(private_cache)),
        )
        for _ in range(2)
    ]
    outputs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr.decode()
        outputs.append(stdout.decode().strip())
    assert outputs[0] == outputs[1]
    built = Path(outputs[0])
    assert built.parent == private_cache / "guests"
    assert built.read_bytes().startswith(COMPONENT_PREAMBLE)
    log = build_log(private_cache)
    assert len(log) == 1
    assert log[0]["output"] == built.name
    assert log[0]["world"] == "command"
    # No temporary files left behind.
    assert sorted(p.name for p in built.parent.iterdir() if not p.name.endswith(".lock")) == [
        BUILD_LOG,
        built.name,
    ]

    # In this process: a cache hit, even from a copy of the sources elsewhere.
    assert build_python_guest(src) == built
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    assert build_python_guest(copy, world="command") == built
    assert len(build_log(private_cache)) == 1

    # Changing a source file changes the key; a __pycache__ does not.
    (src / "__pycache__").mkdir(exist_ok=True)
    (src / "__pycache__" / "junk.pyc").write_bytes(b"junk")
    assert build_python_guest(src) == built
    (src / "app.py").write_text(HELLO_APP.replace('"hello"', '"bonjour"'))
    rebuilt = build_python_guest(src)
    assert rebuilt != built
    assert built.exists()  # old builds stay until the cache is cleared
    assert b"bonjour" in rebuilt.read_bytes()
    assert b"bonjour" not in built.read_bytes()
    assert len(build_log(private_cache)) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "names_inside"),
    [
        ("cli", [b"wasi:cli/run@0.2.0"]),
        ("net", [b"wasi:cli/run@0.2.0", b"wasi:sockets/tcp@0.2"]),
        ("job", [b"fabric:guests/job"]),
        ("service", [b"wasi:cli/run@0.2.0", b"fabric:guests/job"]),
        ("pipeline", [b"fabric:guests/pipeline", b"fabric:guests/job"]),
    ],
)
def test_repo_guests_build(name: str, names_inside: list[bytes]) -> None:
    """Every guest under tests/guests builds (into the shared cache)."""
    built = repo_guests.guest_path(name)
    binary = built.read_bytes()
    assert binary.startswith(COMPONENT_PREAMBLE)
    for needle in names_inside:
        assert needle in binary, needle
