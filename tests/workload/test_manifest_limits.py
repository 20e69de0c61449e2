"""Impossible and unbounded manifest values: one line naming file, line and field each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fabric.cli import main
from fabric.workload import ManifestError, load_manifest, validate

COMPONENT = '[[workloads]]\nname = "a"\n[[workloads.components]]\nname = "c"\nwasm = "c.wasm"\n'
DBPOOL = """\
[[workloads]]
name = "shop"
[[workloads.services]]
name = "db"
native = "services.dbpool.service:DbPoolService"
ports = [7432]
[workloads.services.config.databases.main]
kind = "oracle"
"""

CASES: list[tuple[str, str, str]] = [
    (
        "huge-max-memory",
        COMPONENT + 'max_memory = "999999TiB"\n',
        "{file}:6: workloads[0].components[0].max_memory: expected at most 64GiB, got 999999TiB",
    ),
    (
        "huge-concurrency",
        COMPONENT + "concurrency = 100000000000000000000\n",
        "{file}:6: workloads[0].components[0].concurrency: expected at most 10000, "
        "got 100000000000000000000",
    ),
    (
        "float-concurrency",
        COMPONENT + "concurrency = 1e20\n",
        "{file}:6: workloads[0].components[0].concurrency: expected an integer >= 1, got 1e+20",
    ),
    (
        "huge-queue",
        COMPONENT + "queue = 2000000\n",
        "{file}:6: workloads[0].components[0].queue: expected at most 1000000, got 2000000",
    ),
    (
        "nan-timeout",
        COMPONENT + "timeout = nan\n",
        "{file}:6: workloads[0].components[0].timeout: expected a finite, non-negative "
        "duration, got nan",
    ),
    (
        "huge-timeout",
        COMPONENT + 'timeout = "99999d"\n',
        "{file}:6: workloads[0].components[0].timeout: expected at most 366d, got 99999d",
    ),
    (
        "huge-grace",
        'grace = "400d"\n' + COMPONENT,
        "{file}:1: grace: expected at most 366d, got 400d",
    ),
    (
        "zero-max-instances",
        "max_instances = 0\n" + COMPONENT,
        "{file}:1: max_instances: expected an integer from 1 to 30000, got 0",
    ),
    (
        "huge-max-instances",
        COMPONENT.replace("[[workloads]]", "max_instances = 100000\n[[workloads]]"),
        "{file}:1: max_instances: expected an integer from 1 to 30000, got 100000",
    ),
    (
        "text-max-instances",
        'grace = "1s"\nmax_instances = "many"\n' + COMPONENT,
        '{file}:2: max_instances: expected an integer from 1 to 30000, got "many"',
    ),
    (
        "huge-backoff",
        '[[workloads]]\nname = "a"\n[[workloads.services]]\nname = "s"\nnative = "m:C"\n'
        'restart = { max_backoff = "1000d" }\n',
        "{file}:6: workloads[0].services[0].restart.max_backoff: expected at most 366d, got 1000d",
    ),
    (
        "nul-in-env-key",
        COMPONENT + 'env = { "A\\u0000B" = "x" }\n',
        "{file}:6: workloads[0].components[0].env.\"A\\u0000B\": contains a NUL byte: 'A\\x00B'",
    ),
    (
        "nul-in-env-value",
        COMPONENT + 'env = { A = "x\\u0000" }\n',
        "{file}:6: workloads[0].components[0].env.A: contains a NUL byte: 'x\\x00'",
    ),
    (
        "equals-in-env-key",
        COMPONENT + 'env = { "A=B" = "x" }\n',
        '{file}:6: workloads[0].components[0].env."A=B": expected a variable name without "="',
    ),
    (
        "nul-in-service-args",
        '[[workloads]]\nname = "a"\n[[workloads.services]]\nname = "s"\nwasm = "s.wasm"\n'
        'args = ["ok", "b\\u0000d"]\n',
        "{file}:6: workloads[0].services[0].args[1]: contains a NUL byte: 'b\\x00d'",
    ),
    (
        "nested-3000-arrays",
        "x = " + "[" * 3000 + "]" * 3000 + "\n",
        "{file}: invalid TOML: arrays or tables nested more than 64 levels deep",
    ),
    (
        "nested-config",
        '[[workloads]]\nname = "a"\n[[workloads.services]]\nname = "s"\nnative = "m:C"\n'
        "config = { x = " + "[" * 70 + "]" * 70 + " }\n",
        "{file}:6: workloads[0].services[0].config.x[0][0][0][0][0][0][0][0][0][0]: "
        "arrays or tables nested more than 64 levels deep",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_limit_message(write_manifest: Callable[[str], Path], text: str, expected: str) -> None:
    path = write_manifest(text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert str(info.value) == expected.format(file=path)


def test_native_config_is_checked_against_its_declared_type(
    write_manifest: Callable[[str], Path],
) -> None:
    path = write_manifest(DBPOOL)
    manifest = load_manifest(path)  # without importing the class, config is any table
    with pytest.raises(ManifestError) as info:
        validate(manifest, import_native=True)
    assert str(info.value) == (
        f"{path}:8: workloads[0].services[0].config.databases.main.kind: "
        'expected one of "mysql", "postgres", got "oracle"'
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("port = 7432\n", ':7: workloads[0].services[0].config: missing required key "databases"'),
        (
            '[workloads.services.config.databases.main]\nkind = "postgres"\nmax_size = 0\n',
            ":7: workloads[0].services[0].config.databases.main: "
            "max_size must be at least 1, not 0, got { kind = ",
        ),
        (
            "[workloads.services.config]\nport = 99999\ndatabases = {}\n",
            ":8: workloads[0].services[0].config.port: expected an integer from 0 to 65535, "
            "got 99999",
        ),
    ],
)
def test_more_dbpool_config_errors(
    write_manifest: Callable[[str], Path], config: str, expected: str
) -> None:
    text = DBPOOL.split("[workloads.services.config")[0]
    if not config.startswith("["):
        config = "[workloads.services.config]\n" + config
    path = write_manifest(text + config)
    with pytest.raises(ManifestError) as info:
        validate(load_manifest(path), import_native=True)
    assert str(info.value).startswith(f"{path}{expected}")


def test_non_finite_numbers_in_a_native_config(write_manifest: Callable[[str], Path]) -> None:
    text = DBPOOL.replace('"oracle"', '"postgres"\nacquire_timeout = inf')
    text += "[workloads.services.config.limits]\nidle_timeout = nan\n"
    path = write_manifest(text)
    with pytest.raises(ManifestError) as info:
        validate(load_manifest(path), import_native=True)
    assert [str(issue) for issue in info.value.issues] == [
        f"{path}:9: workloads[0].services[0].config.databases.main.acquire_timeout: "
        "expected a finite number, got inf",
        f"{path}:11: workloads[0].services[0].config.limits.idle_timeout: "
        "expected a finite number, got nan",
    ]


def test_fabric_validate_refuses_the_dbpool_config(
    write_manifest: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_manifest(DBPOOL)
    assert main(["validate", "--no-files", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"fabric validate: {path}:8: workloads[0].services[0].config.databases.main.kind: "
        'expected one of "mysql", "postgres", got "oracle"\n'
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("directory", "{target} is a directory, not a component file"),
        ("/dev/zero", "/dev/zero is not a regular file (a device, pipe or socket), "
                      "not a component file"),
        ("missing.wasm", "file {target} does not exist"),
    ],
)  # fmt: skip
def test_wasm_that_is_not_a_file(
    write_manifest: Callable[[str], Path], tmp_path: Path, target: str, message: str
) -> None:
    (tmp_path / "directory").mkdir()
    full = target if target.startswith("/") else str(tmp_path / target)
    path = write_manifest(COMPONENT.replace("c.wasm", target))
    with pytest.raises(ManifestError) as info:
        validate(load_manifest(path), check_files=True)
    assert str(info.value) == (
        f"{path}:5: workloads[0].components[0].wasm: " + message.format(target=full)
    )
