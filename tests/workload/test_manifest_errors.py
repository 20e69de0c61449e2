"""Bad manifests: each one with the exact message a user sees (file:line: field path: message)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fabric.errors import UsageError
from fabric.workload import ManifestError, load_manifest

SERVICE = """\
[[workloads]]
name = "shop"

[[workloads.services]]
name = "api"
native = "pkg.api:Api"
ports = [8080]
"""

COMPONENT = """\
[[workloads]]
name = "shop"
[[workloads.components]]
name = "job"
wasm = "job.wasm"
"""

CASES: list[tuple[str, str, str]] = [
    (
        "unknown-key",
        '[[workloads]]\nname = "a"\ncolour = "red"\n',
        '{file}:3: workloads[0].colour: unknown key "colour" '
        "(valid keys: name, names, services, components, links, ingress, egress)",
    ),
    (
        "unknown-key-suggestion",
        SERVICE + 'restart = { max_backof = "1s" }\n',
        '{file}:8: workloads[0].services[0].restart.max_backof: unknown key "max_backof" '
        '(did you mean "max_backoff"?)',
    ),
    (
        "unknown-top-level-key",
        'version = 2\n[[workloads]]\nname = "a"\n',
        '{file}:1: version: unknown key "version" '
        "(valid keys: workloads, python_path, grace, metrics, max_instances)",
    ),
    (
        "wrong-type-name",
        "[[workloads]]\nname = 5\n",
        "{file}:2: workloads[0].name: expected a non-empty string, got 5",
    ),
    (
        "wrong-type-table",
        '[[workloads]]\nname = "a"\nservices = "api"\n',
        '{file}:3: workloads[0].services: expected an array, got "api"',
    ),
    (
        "bad-duration-bool",
        '[[workloads]]\nname = "a"\n\n[[workloads]]\nname = "b"\n\n'
        '[[workloads.services]]\nname = "s"\nnative = "m:C"\n\n'
        "[workloads.services.restart]\nmax_backoff = true\n",
        '{file}:12: workloads[1].services[0].restart.max_backoff: expected a duration like "30s", '
        "got true",
    ),
    (
        "bad-duration-unit",
        SERVICE + 'ready_timeout = "5 sec"\n',
        '{file}:8: workloads[0].services[0].ready_timeout: expected a duration like "30s", '
        'got "5 sec"',
    ),
    (
        "negative-duration",
        SERVICE + "stop_timeout = -1\n",
        "{file}:8: workloads[0].services[0].stop_timeout: expected a finite, non-negative "
        "duration, got -1",
    ),
    (
        "bad-size",
        '[[workloads]]\nname = "a"\n[[workloads.components]]\nname = "c"\nwasm = "c.wasm"\n'
        'max_memory = "lots"\n',
        '{file}:6: workloads[0].components[0].max_memory: expected a size like "64MiB", got "lots"',
    ),
    (
        "missing-required-key",
        "[[workloads]]\nnames = {}\n",
        '{file}:1: workloads[0]: missing required key "name"',
    ),
    (
        "port-out-of-range",
        SERVICE.replace("[8080]", "[8080, 70000]"),
        "{file}:7: workloads[0].services[0].ports[1]: expected an integer from 1 to 65535, "
        "got 70000",
    ),
    (
        "bad-enum",
        SERVICE + 'restart.mode = "sometimes"\n',
        '{file}:8: workloads[0].services[0].restart.mode: expected one of "always", '
        '"never", "on-failure", got "sometimes"',
    ),
    (
        "env-value-not-string",
        SERVICE + 'env = { HOME = "/", DEBUG = 1 }\n',
        "{file}:8: workloads[0].services[0].env.DEBUG: expected a string, got 1",
    ),
    (
        "jitter-above-one",
        SERVICE + "restart = { jitter = 1.5 }\n",
        "{file}:8: workloads[0].services[0].restart.jitter: expected a number from 0.0 to 1.0, "
        "got 1.5",
    ),
    (
        "concurrency-zero",
        '[[workloads]]\nname = "a"\n[[workloads.components]]\nname = "c"\nwasm = "c.wasm"\n'
        "concurrency = 0\n",
        "{file}:6: workloads[0].components[0].concurrency: expected an integer >= 1, got 0",
    ),
    (
        "toml-syntax-error",
        '[[workloads]]\nname = "a"\nports = [1, 2\n',
        "{file}:3: invalid TOML: Unclosed array (at end of document)",
    ),
    (
        "toml-duplicate-key",
        '[[workloads]]\nname = "a"\nname = "b"\n',
        "{file}:3: invalid TOML: Cannot overwrite a value (at column 11)",
    ),
    (
        "empty-workloads",
        "# nothing here yet\n",
        "{file}:1: workloads: no workloads defined (add a [[workloads]] table with a name)",
    ),
    (
        "duplicate-service-name",
        SERVICE + '\n[[workloads.services]]\nname = "api"\nnative = "pkg.api:Other"\n',
        '{file}:10: workloads[0].services[1].name: duplicate name "api" '
        "(also workloads[0].services[0])",
    ),
    (
        "service-and-component-share-a-name",
        SERVICE + '\n[[workloads.components]]\nname = "api"\nwasm = "api.wasm"\n',
        '{file}:10: workloads[0].components[0].name: duplicate name "api" '
        "(also workloads[0].services[0])",
    ),
    (
        "duplicate-workload-name",
        '[[workloads]]\nname = "a"\n[[workloads]]\nname = "a"\n',
        '{file}:4: workloads[1].name: duplicate workload name "a" (also workloads[0])',
    ),
    (
        "bad-name",
        '[[workloads]]\nname = "my shop"\n',
        '{file}:2: workloads[0].name: expected a name of letters, digits, "_", "-" and "." '
        'that starts with a letter or digit, got "my shop"',
    ),
    (
        "link-to-unknown-component",
        SERVICE + '\n[[workloads.components]]\nname = "job"\nwasm = "job.wasm"\n'
        '\n[[workloads.links]]\nimporter = "api"\ninterface = "fabric:guests/job"\n'
        'component = "jbo"\n',
        '{file}:16: workloads[0].links[0].component: no component named "jbo" in workload '
        '"shop" (components: job)',
    ),
    (
        "link-to-a-service",
        SERVICE + '\n[[workloads.links]]\nimporter = "api"\ninterface = "fabric:guests/job"\n'
        'component = "api"\n',
        '{file}:12: workloads[0].links[0].component: "api" is a service; a link must name a '
        "component (instantiated per call)",
    ),
    (
        "link-from-unknown-importer",
        '[[workloads]]\nname = "a"\n[[workloads.components]]\nname = "job"\nwasm = "j.wasm"\n'
        '[[workloads.links]]\nimporter = "cron"\ninterface = "fabric:guests/job"\n'
        'component = "job"\n',
        '{file}:7: workloads[0].links[0].importer: no service or component named "cron" in '
        'workload "a"',
    ),
    (
        "link-bad-interface",
        '[[workloads]]\nname = "a"\n[[workloads.components]]\nname = "job"\nwasm = "j.wasm"\n'
        '[[workloads.components]]\nname = "web"\nwasm = "w.wasm"\n'
        '[[workloads.links]]\nimporter = "web"\ninterface = "job"\ncomponent = "job"\n',
        "{file}:11: workloads[0].links[0].interface: expected an interface like "
        '"fabric:guests/job" or "wasi:http/incoming-handler@0.2.0", got "job"',
    ),
    (
        "link-cycle",
        '[[workloads]]\nname = "a"\n'
        'components = [{ name = "x", wasm = "x.wasm" }, { name = "y", wasm = "y.wasm" }]\n'
        "links = [\n"
        '  { importer = "x", interface = "fabric:guests/job", component = "y" },\n'
        '  { importer = "y", interface = "fabric:guests/job", component = "x" },\n'
        "]\n",
        "{file}:6: workloads[0].links[1]: links form a cycle: y -> x -> y "
        "(every call would instantiate the next one forever)",
    ),
    (
        "port-collision",
        SERVICE + '\n[[workloads.services]]\nname = "admin"\nnative = "pkg.admin:Admin"\n'
        "ports = [9090, 8080]\n",
        "{file}:12: workloads[0].services[1].ports[1]: port 8080 is already declared by service "
        '"api" (workloads[0].services[0].ports[0])',
    ),
    (
        "bad-module-class",
        SERVICE.replace("pkg.api:Api", "pkg/api.py"),
        '{file}:6: workloads[0].services[0].native: expected "module:Class" like '
        '"services.dbpool.service:DbPoolService", got "pkg/api.py"',
    ),
    (
        "wasm-and-native",
        SERVICE + 'wasm = "api.wasm"\n',
        '{file}:6: workloads[0].services[0].native: give either "wasm" or "native", not both',
    ),
    (
        "neither-wasm-nor-native",
        '[[workloads]]\nname = "a"\n[[workloads.services]]\nname = "s"\n',
        '{file}:3: workloads[0].services[0]: missing "wasm" (a component path) or "native" '
        '(a Python "module:Class")',
    ),
    (
        "native-with-args",
        SERVICE + 'args = ["--fast"]\n',
        '{file}:8: workloads[0].services[0].args: only wasm services take "args" '
        '(native services get "config")',
    ),
    (
        "native-with-fast-bytes",
        SERVICE + "fast_bytes = true\n",
        '{file}:8: workloads[0].services[0].fast_bytes: only wasm services take "fast_bytes" '
        "(it rewrites how a wasm guest moves stream bytes)",
    ),
    (
        "fast-bytes-not-a-bool",
        COMPONENT + 'fast_bytes = "yes"\n',
        '{file}:6: workloads[0].components[0].fast_bytes: expected true or false, got "yes"',
    ),
    (
        "wasm-with-config",
        '[[workloads]]\nname = "a"\n[[workloads.services]]\nname = "s"\nwasm = "s.wasm"\n'
        "config = { a = 1 }\n",
        '{file}:6: workloads[0].services[0].config: only native services take "config" '
        '(wasm services get "args" and "env")',
    ),
    (
        "max-backoff-below-initial",
        SERVICE + 'restart = { initial_backoff = "2s", max_backoff = "500ms" }\n',
        "{file}:8: workloads[0].services[0].restart.max_backoff: must be at least "
        "initial_backoff (2s), got 500ms",
    ),
    (
        "ingress-host-port-twice",
        SERVICE
        + "[[workloads.ingress]]\nhost_port = 18080\nport = 8080\n\n"
        + SERVICE.replace('"shop"', '"shop2"')
        + "[[workloads.ingress]]\nhost_port = 18080\nport = 8080\n",
        "{file}:20: workloads[1].ingress[0].host_port: host port 18080 is already published by "
        'workload "shop" (workloads[0].ingress[0])',
    ),
    (
        "ingress-undeclared-port",
        SERVICE + "[[workloads.ingress]]\nhost_port = 18080\nport = 9090\n",
        '{file}:10: workloads[0].ingress[0].port: no service of workload "shop" declares '
        "port 9090 (declared: 8080)",
    ),
    (
        "names-not-an-ip",
        '[[workloads]]\nname = "a"\nnames = { db = "localhost" }\n',
        '{file}:3: workloads[0].names.db: expected an IP address like "127.0.0.1", got "localhost"',
    ),
    (
        "egress-bad-to",
        '[[workloads]]\nname = "a"\n[[workloads.egress]]\ndest = "db.example"\nport = 5432\n'
        'to = "127.0.0.1"\n',
        '{file}:6: workloads[0].egress[0].to: expected "host:port" like "127.0.0.1:5432", '
        'got "127.0.0.1"',
    ),
    (
        "reuse-unknown-key",
        COMPONENT + "reuse = { max_invocation = 5 }\n",
        "{file}:6: workloads[0].components[0].reuse.max_invocation: unknown key "
        '"max_invocation" (did you mean "max_invocations"?)',
    ),
    (
        "reuse-max-invocations-zero",
        COMPONENT + "reuse = { max_invocations = 0 }\n",
        "{file}:6: workloads[0].components[0].reuse.max_invocations: expected an integer "
        "from 1 to 1000000, got 0",
    ),
    (
        "reuse-pool-size-too-large",
        COMPONENT + "[workloads.components.reuse]\npool_size = 5000\n",
        "{file}:7: workloads[0].components[0].reuse.pool_size: expected an integer "
        "from 1 to 1024, got 5000",
    ),
    (
        "reuse-idle-bad-duration",
        COMPONENT + 'reuse = { idle = "soon" }\n',
        '{file}:6: workloads[0].components[0].reuse.idle: expected a duration like "30s", '
        'got "soon"',
    ),
    (
        "reuse-idle-zero",
        COMPONENT + 'reuse = { idle = "0s" }\n',
        "{file}:6: workloads[0].components[0].reuse.idle: expected a positive duration, got 0s",
    ),
    (
        "reuse-idle-too-long",
        COMPONENT + 'reuse = { idle = "2d" }\n',
        "{file}:6: workloads[0].components[0].reuse.idle: expected at most 1d, got 2d",
    ),
    (
        "relative-guest-dir",
        '[[workloads]]\nname = "a"\n[[workloads.components]]\nname = "c"\nwasm = "c.wasm"\n'
        'dirs = [{ host = "data", guest = "data" }]\n',
        "{file}:6: workloads[0].components[0].dirs[0].guest: expected an absolute path like "
        '"/data", got "data"',
    ),
    (
        "metrics-unknown-key",
        '[metrics]\nlisten = "127.0.0.1:9464"\nport = 9464\n' + COMPONENT,
        '{file}:3: metrics.port: unknown key "port" '
        "(valid keys: listen, max_clients, timeout, max_request_size)",
    ),
    (
        "metrics-listen-missing",
        "[metrics]\nmax_clients = 4\n" + COMPONENT,
        '{file}:1: metrics: missing required key "listen"',
    ),
    (
        "metrics-listen-host-name",
        '[metrics]\nlisten = "localhost:9464"\n' + COMPONENT,
        '{file}:2: metrics.listen: expected "host:port" with an IP address, like '
        '"127.0.0.1:9464" or "0.0.0.0:9464", got "localhost:9464"',
    ),
    (
        "metrics-listen-port-range",
        '[metrics]\nlisten = "127.0.0.1:70000"\n' + COMPONENT,
        '{file}:2: metrics.listen: expected "host:port" with an IP address, like '
        '"127.0.0.1:9464" or "0.0.0.0:9464", got "127.0.0.1:70000"',
    ),
    (
        "metrics-max-clients",
        '[metrics]\nlisten = "127.0.0.1:9464"\nmax_clients = 0\n' + COMPONENT,
        "{file}:3: metrics.max_clients: expected an integer from 1 to 1024, got 0",
    ),
    (
        "metrics-timeout-zero",
        '[metrics]\nlisten = "127.0.0.1:9464"\ntimeout = "0s"\n' + COMPONENT,
        "{file}:3: metrics.timeout: expected a positive duration, got 0s",
    ),
    (
        "metrics-request-size",
        '[metrics]\nlisten = "127.0.0.1:9464"\nmax_request_size = "2MiB"\n' + COMPONENT,
        "{file}:3: metrics.max_request_size: expected from 256B to 1MiB, got 2MiB",
    ),
    (
        "metrics-port-published-by-ingress",
        SERVICE
        + "[[workloads.ingress]]\nhost_port = 9464\nport = 8080\n"
        + '[metrics]\nlisten = "0.0.0.0:9464"\n',
        '{file}:12: metrics.listen: host port 9464 is already published by workload "shop" '
        "(workloads[0].ingress[0])",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_manifest_message(
    write_manifest: Callable[[str], Path], text: str, expected: str
) -> None:
    path = write_manifest(text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert str(info.value) == expected.format(file=path)
    assert len(info.value.issues) == 1


def test_every_semantic_problem_is_reported_at_once(
    write_manifest: Callable[[str], Path],
) -> None:
    path = write_manifest(
        SERVICE
        + 'env.X = "fine"\n'
        + '\n[[workloads.services]]\nname = "api"\nwasm = "a.wasm"\nports = [8080]\n'
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert [str(issue) for issue in info.value.issues] == [
        f'{path}:11: workloads[0].services[1].name: duplicate name "api" '
        "(also workloads[0].services[0])",
        f"{path}:13: workloads[0].services[1].ports[0]: port 8080 is already declared by "
        'service "api" (workloads[0].services[0].ports[0])',
    ]


def test_manifest_error_is_a_usage_error(write_manifest: Callable[[str], Path]) -> None:
    with pytest.raises(UsageError):
        load_manifest(write_manifest("workloads = 3\n"))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert str(info.value) == f"{path}: cannot read manifest: No such file or directory"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[[workloads]]\nname = "caf\xe9"\n')
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert str(info.value) == f"{path}:2: invalid TOML: not UTF-8 text"


def test_files_checked_on_request(write_manifest: Callable[[str], Path], tmp_path: Path) -> None:
    from fabric.workload import validate

    path = write_manifest(
        '[[workloads]]\nname = "a"\n[[workloads.components]]\nname = "c"\nwasm = "missing.wasm"\n'
    )
    manifest = load_manifest(path)  # paths may name files that do not exist yet
    with pytest.raises(ManifestError) as info:
        validate(manifest, check_files=True)
    assert str(info.value) == (
        f"{path}:5: workloads[0].components[0].wasm: file {tmp_path / 'missing.wasm'} "
        "does not exist"
    )


def test_native_import_checked_on_request(write_manifest: Callable[[str], Path]) -> None:
    from fabric.workload import validate

    path = write_manifest(SERVICE.replace("pkg.api:Api", "json:NoSuchClass"))
    manifest = load_manifest(path)
    with pytest.raises(ManifestError) as info:
        validate(manifest, import_native=True)
    assert str(info.value) == (
        f"{path}:6: workloads[0].services[0].native: native service 'json:NoSuchClass': "
        "'json' has no attribute 'NoSuchClass'"
    )
