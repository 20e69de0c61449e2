"""Any input to the command line or the manifest loader: success or a clean error.

A clean error is one of fabric's own (``FabricError`` family, shown as one line)
or argparse's usage message (``SystemExit``); any other exception is a bug.
"""

from __future__ import annotations

import io
import os
import string
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.cli import main
from fabric.errors import FabricError
from fabric.workload import ManifestError, loads_manifest, manifest_from_dict, validate

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

KEYS = [
    "workloads", "python_path", "grace", "name", "names", "services", "components", "links",
    "ingress", "egress", "wasm", "native", "python", "args", "env", "config", "ports", "dirs",
    "max_memory", "restart", "ready_timeout", "stop_timeout", "world", "concurrency", "queue",
    "timeout", "host", "guest", "readonly", "mode", "initial_backoff", "max_backoff",
    "multiplier", "jitter", "max_restarts", "window", "reset_after", "importer", "interface",
    "component", "host_port", "port", "dest", "to",
]  # fmt: skip

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["5s", "64MiB", "1e400", "999999TiB", "-1s", "nan", "a:B", "127.0.0.1:1"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)
workload = st.fixed_dictionaries(
    {"name": st.one_of(st.just("w"), st.text(max_size=6))},
    optional={
        "services": st.lists(st.dictionaries(keys, values, max_size=6), max_size=3),
        "components": st.lists(st.dictionaries(keys, values, max_size=6), max_size=3),
        "ingress": st.lists(st.dictionaries(keys, values, max_size=4), max_size=2),
        "egress": st.lists(st.dictionaries(keys, values, max_size=4), max_size=2),
        "links": st.lists(st.dictionaries(keys, values, max_size=4), max_size=2),
        "names": st.dictionaries(st.text(max_size=8), values, max_size=3),
    },
)
documents = st.fixed_dictionaries(
    {"workloads": st.lists(workload, max_size=3)},
    optional={"grace": values, "python_path": values},
)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, str):
        return '"' + "".join(c if c.isalnum() else f"\\u{ord(c):04x}" for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    items = ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items())
    return "{ " + items + " }"


def _check(raw: Any, *, files: bool) -> None:
    try:
        manifest = manifest_from_dict(raw, path="fuzz.toml", base_dir="/nonexistent")
        validate(manifest, check_files=files)
    except ManifestError as exc:
        assert str(exc)
        assert all(issue.message for issue in exc.issues)


@FUZZ
@given(documents)
def test_manifest_documents(raw: dict[str, Any]) -> None:
    _check(raw, files=True)


@FUZZ
@given(documents)
def test_manifest_documents_as_toml_text(raw: dict[str, Any]) -> None:
    lines = []
    if "grace" in raw:
        lines.append(f"grace = {_toml_value(raw['grace'])}")
    for wl in raw["workloads"]:
        lines.append("[[workloads]]")
        for key, value in wl.items():
            lines.append(f"{_toml_value(key)} = {_toml_value(value)}")
    text = "\n".join(lines) + "\n"
    try:
        loads_manifest(text, path="fuzz.toml", base_dir="/nonexistent")
    except ManifestError as exc:
        assert str(exc)


@FUZZ
@given(st.text(max_size=200) | st.text(alphabet=string.printable, max_size=200))
def test_manifest_any_text(text: str) -> None:
    try:
        loads_manifest(text, path="fuzz.toml")
    except ManifestError as exc:
        assert str(exc).startswith("fuzz.toml")


OPTIONS = [
    "--env", "--dir", "--timeout", "--max-memory", "--service", "--publish", "--egress",
    "--control", "--manifest", "--json", "--no-files", "--", "-h",
]  # fmt: skip
WORDS = st.one_of(
    st.sampled_from(OPTIONS),
    st.text(max_size=12),
    st.sampled_from(["nan", "-1", "inf", "1e400", '"abc', "A=\x00", "0:0", "x:1=y:2", "/dev/zero"]),
    st.sampled_from(["a\x00b", "x\udcff.toml", "/" + "x" * 300, "/", "/dev/null", "[1", "{}"]),
)
ARGUMENTS = st.lists(
    st.one_of(WORDS.map(lambda w: [w]), st.tuples(st.sampled_from(OPTIONS), WORDS).map(list)),
    max_size=5,
).map(lambda groups: [word for group in groups for word in group])


@pytest.fixture
def quiet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FABRIC_CONTROL", str(tmp_path / "none.sock"))
    monkeypatch.chdir(tmp_path)  # relative names resolve to nothing
    return tmp_path


@FUZZ
@given(
    command=st.sampled_from(["validate", "status", "invoke", "exec", "run", "nope"]),
    words=ARGUMENTS,
)
def test_command_line(
    quiet_env: Path, monkeypatch: pytest.MonkeyPatch, command: str, words: list[str]
) -> None:
    # like a terminal's streams, these take any str (the real stderr escapes surrogates)
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    argv = [command, *words]
    if command in ("exec", "run") and not any(w.startswith("-") for w in words[:1]):
        # never start a real guest or fabric: the component/manifest does not exist
        argv = [command, *words, str(quiet_env / "missing")]
        if command == "run":
            argv = [command, str(quiet_env / "missing.toml"), *words]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage line and status 2 (0 for -h)
        assert exc.code in (0, 2)
    except FabricError:  # pragma: no cover - main turns these into messages
        pytest.fail("main let a FabricError escape")
    else:
        assert isinstance(code, int)
        if code != 0:
            assert err.getvalue().startswith(f"fabric {command}: ")
            assert "Traceback" not in err.getvalue()
    assert os.environ["FABRIC_CONTROL"].endswith("none.sock")
