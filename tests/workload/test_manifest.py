"""Good manifests: decoded values, defaults, path resolution, round trips, the examples."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from fabric.workload import (
    ByteSize,
    Duration,
    Manifest,
    ManifestError,
    NotFound,
    RestartPolicy,
    load_manifest,
    loads_manifest,
    manifest_from_dict,
    validate,
)
from fabric.workload._toml_lines import SourceMap, scan_lines
from fabric.workload.manifest import (
    ComponentSpec,
    EgressRule,
    IngressRule,
    LinkSpec,
    ManifestFile,
    MetricsSpec,
    RestartSpec,
    ReuseSpec,
    ServiceSpec,
    WorkloadSpec,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

FULL = """\
python_path = ["lib"]
grace = "15s"

[[workloads]]
name = "shop"
names = { db = "10.0.0.5", "cache.internal" = "::1" }

[[workloads.services]]
name = "dbpool"
native = "services.dbpool.service:DbPoolService"
ports = [7000, 7001]
env = { MODE = "prod" }
config = { databases = { main = { kind = "postgres", max_size = 4 } } }
restart = { mode = "on-failure", initial_backoff = "250ms", max_backoff = "1m", \
multiplier = 3, jitter = 0.5, max_restarts = 2, window = "2m", reset_after = "10s" }
ready_timeout = 20
stop_timeout = "1.5s"

[[workloads.services]]
name = "cron"
wasm = "guests/cron.wasm"
args = ["--every", "5s"]
max_memory = "32MiB"
dirs = [{ host = "state", guest = "/state" }]

[[workloads.components]]
name = "job"
wasm = "/abs/job.wasm"
concurrency = 2
queue = 0
timeout = "250ms"
max_memory = 134217728
env = { LEVEL = "debug" }
dirs = [{ host = "~/data", guest = "/data", readonly = true }]

[[workloads.links]]
importer = "cron"
interface = "fabric:guests/job@0.1.0"
component = "job"

[[workloads.ingress]]
host_port = 18080
port = 7000
host = "0.0.0.0"

[[workloads.egress]]
dest = "db.example"
port = 5432
to = "127.0.0.1:5432"

[[workloads.egress]]
dest = "10.1.2.3"
port = 443

[[workloads]]
name = "minimal"
"""


@pytest.fixture
def full(write_manifest: Callable[[str], Path]) -> Manifest:
    return load_manifest(write_manifest(FULL))


def test_values_are_decoded(full: Manifest) -> None:
    base = Path(full.path).parent
    assert full.grace == 15.0 and isinstance(full.grace, Duration)
    assert full.python_path == (str(base / "lib"),)
    shop = full.workload("shop")
    assert shop.names == {"db": "10.0.0.5", "cache.internal": "::1"}
    dbpool, cron = shop.services
    assert dbpool.kind == "native" and cron.kind == "wasm"
    assert dbpool.ports == (7000, 7001)
    assert dbpool.config == {"databases": {"main": {"kind": "postgres", "max_size": 4}}}
    assert dbpool.restart.policy() == RestartPolicy(
        mode="on-failure",
        initial_backoff=0.25,
        max_backoff=60.0,
        multiplier=3.0,
        jitter=0.5,
        max_restarts=2,
        window=120.0,
        reset_after=10.0,
    )
    assert (dbpool.ready_timeout, dbpool.stop_timeout) == (20.0, 1.5)
    assert cron.wasm == str(base / "guests" / "cron.wasm")
    assert cron.args == ("--every", "5s")
    assert cron.max_memory == 32 * 2**20 and isinstance(cron.max_memory, ByteSize)
    assert cron.dirs[0].host == str(base / "state") and cron.dirs[0].readonly is False
    (job,) = shop.components
    assert job.wasm == "/abs/job.wasm"
    assert (job.concurrency, job.queue, job.timeout, job.max_memory) == (2, 0, 0.25, 2**27)
    assert job.dirs[0].host == str(Path("~/data").expanduser())
    assert shop.links[0].interface == "fabric:guests/job@0.1.0"
    assert shop.ingress[0].host == "0.0.0.0"
    assert shop.egress[0].to == "127.0.0.1:5432" and shop.egress[1].to is None
    assert shop.component("job") is job and shop.service("cron") is cron


def test_defaults(full: Manifest) -> None:
    minimal = full.workload("minimal")
    assert (minimal.services, minimal.components, minimal.links) == ((), (), ())
    assert minimal.names == {}
    cron = full.workload("shop").service("cron")
    assert cron.restart.policy() == RestartPolicy()
    assert (cron.ready_timeout, cron.stop_timeout) == (10.0, 5.0)
    comp = (
        loads_manifest(
            '[[workloads]]\nname = "a"\n[[workloads.components]]\nname = "c"\nwasm = "c.wasm"\n'
        )
        .workloads[0]
        .components[0]
    )
    assert (comp.concurrency, comp.queue, comp.timeout, comp.max_memory) == (16, 64, 30.0, None)


def test_lookups_name_what_exists(full: Manifest) -> None:
    with pytest.raises(NotFound, match=r"no workload 'nope' .*\(workloads: shop, minimal\)"):
        full.workload("nope")
    with pytest.raises(NotFound, match="workload 'shop' has no component 'dbpool'"):
        full.workload("shop").component("dbpool")


def test_round_trip_through_builtins_and_json(full: Manifest) -> None:
    data = full.to_dict()
    assert data["workloads"][0]["services"][0]["restart"]["initial_backoff"] == "250ms"
    assert data["workloads"][0]["components"][0]["max_memory"] == "128MiB"
    again = manifest_from_dict(data, path=full.path)
    assert again.workloads == full.workloads
    assert (again.python_path, again.grace) == (full.python_path, full.grace)
    via_json = manifest_from_dict(msgspec.json.decode(msgspec.json.encode(data)), path=full.path)
    assert via_json.workloads == full.workloads


def test_inline_and_table_forms_are_the_same(write_manifest: Callable[[str], Path]) -> None:
    inline = load_manifest(
        write_manifest(
            '[[workloads]]\nname = "a"\n'
            'services = [{ name = "s", native = "m:C", restart = { max_restarts = 1 } }]\n'
        )
    )
    tables = load_manifest(
        write_manifest(
            '[[workloads]]\nname = "a"\n\n[[workloads.services]]\nname = "s"\nnative = "m:C"\n\n'
            "[workloads.services.restart]\nmax_restarts = 1\n"
        )
    )
    assert inline.workloads == tables.workloads


def test_validate_passes_a_good_manifest(full: Manifest) -> None:
    validate(full)  # no exception


@pytest.mark.parametrize("name", ["two-workloads.toml", "dbpool/fabric.toml"])
def test_examples_load(name: str) -> None:
    manifest = load_manifest(EXAMPLES / name)
    assert manifest.workloads


def test_two_workloads_example_imports_its_services() -> None:
    manifest = load_manifest(EXAMPLES / "two-workloads.toml")
    validate(manifest, check_files=True, import_native=True)
    assert [w.name for w in manifest.workloads] == ["blue", "green"]
    assert [w.services[0].ports for w in manifest.workloads] == [(8080,), (8080,)]
    assert [w.ingress[0].host_port for w in manifest.workloads] == [18080, 18081]


def test_errors_after_multiline_strings_point_at_the_right_line(
    write_manifest: Callable[[str], Path],
) -> None:
    path = write_manifest(
        '[[workloads]]\nname = "a"\n[[workloads.services]]\nname = "s"\nnative = "m:C"\n'
        'config = { text = """line one\n"quoted" \\"""\nline three""", raw = \'\'\'x\ny\'\'\' }\n'
        "ready_timeout = false\n"
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert str(info.value) == (
        f'{path}:10: workloads[0].services[0].ready_timeout: expected a duration like "30s", '
        "got false"
    )


def test_line_scanner_tracks_tables_arrays_and_keys() -> None:
    lines = scan_lines(
        "# comment\n"
        '"quoted key" = 1\n'
        "[[a]]\n"
        "x.y = [\n"
        "  1, # one\n"
        "  { z = 'two' },\n"
        "]\n"
        "[a.t]\n"
        "k = 1979-05-27 07:32:00Z\n"
        "[[a]]\n"
        "[[a.b]]\n"
        "w = 'its'\n"
    )
    assert lines.exact(("quoted key",)) == 2
    assert lines.exact(("a", 0)) == 3
    assert lines.exact(("a", 0, "x", "y")) == 4
    assert lines.exact(("a", 0, "x", "y", 1)) == 6
    assert lines.exact(("a", 0, "x", "y", 1, "z")) == 6
    assert lines.exact(("a", 0, "t", "k")) == 9
    assert lines.exact(("a", 1)) == 10
    assert lines.exact(("a", 1, "b", 0, "w")) == 12
    assert lines.line(("a", 1, "b", 0, "missing", "deeper")) == 11
    assert lines.line(("nowhere",)) == 1
    assert SourceMap().line(("workloads", 0)) is None


def test_errors_in_data_without_text_have_no_line() -> None:
    with pytest.raises(ManifestError) as info:
        manifest_from_dict({"workloads": [{"name": 1}]}, path="generated")
    assert str(info.value) == "generated: workloads[0].name: expected a non-empty string, got 1"


def test_reference_documents_every_field() -> None:
    doc = (EXAMPLES.parent / "docs" / "manifest.md").read_text()
    structs = (ManifestFile, WorkloadSpec, ServiceSpec, RestartSpec, ComponentSpec, ReuseSpec,
               LinkSpec, IngressRule, EgressRule, MetricsSpec)  # fmt: skip
    for struct in structs:
        for field in msgspec.structs.fields(struct):
            assert f"| `{field.encode_name}` |" in doc, f"{struct.__name__}.{field.name}"
