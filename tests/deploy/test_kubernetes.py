"""deploy/: the Kubernetes manifests and the image recipe, checked offline.

No cluster and no container build here: every Kubernetes object is validated
against the OpenAPI schemas that ``kubernetes-validate`` bundles (strict: an
unknown field is an error), the fabric manifest of the ConfigMap is read by
fabric's own loader, and the pieces that must agree (ports, probe paths,
mount paths, metric names) are compared.  ``deploy/image-steps.sh`` itself
runs in ``.ci/run`` (it installs fabric into a fresh prefix: about a minute).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fabric.workload import load_manifest, loads_manifest, validate
from fabric.workload.checks import split_listen
from fabric.workload.exposition import FabricCollector
from fabric.workload.status import (
    LATENCY_BOUNDS,
    ComponentStatus,
    Histogram,
    StatusReport,
    WorkloadStatus,
)
from tests.guestlib import ROOT

DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
#: the oldest and the newest Kubernetes release the bundled schemas cover that we claim
VERSIONS = ("1.30.0", "1.37.0")
#: kinds from CRDs, which the bundled schemas do not know: checked by hand below
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def objects() -> list[tuple[str, dict[str, Any]]]:
    """Every Kubernetes object under deploy/kubernetes (not kustomize or Helm values)."""
    return [
        (str(path.relative_to(KUBE)), doc)
        for path in sorted(KUBE.rglob("*.yaml"))
        for doc in documents(path)
        if "kind" in doc and not doc["apiVersion"].startswith("kustomize.config")
    ]


def generated_configmap() -> dict[str, Any]:
    """The ConfigMap kustomize generates from kustomization.yaml (without the hash suffix)."""
    (kustomization,) = documents(KUBE / "kustomization.yaml")
    (generator,) = kustomization["configMapGenerator"]
    data = {name: (KUBE / name).read_text() for name in generator["files"]}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": generator["name"]},
        "data": data,
    }


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [doc for _, doc in objects() if doc["kind"] == kind]
    return doc


def container() -> dict[str, Any]:
    (c,) = by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_matches_the_kubernetes_schemas(version: str) -> None:
    checked = 0
    for where, doc in [*objects(), ("kustomization.yaml", generated_configmap())]:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{where}: {doc['kind']}: {error.message} at {list(error.path)}")
        checked += 1
    assert checked >= 5  # Deployment, Service, PDB, HPA, the generated ConfigMap


def test_the_schemas_catch_a_misspelt_field() -> None:
    deployment = by_kind("Deployment")
    spec = deployment["spec"]["template"]["spec"]
    spec["containers"][0]["readinesProbe"] = spec["containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


def test_kustomization_lists_files_that_exist() -> None:
    (kustomization,) = documents(KUBE / "kustomization.yaml")
    for name in kustomization["resources"]:
        assert (KUBE / name).is_file(), name
    names = {doc["metadata"]["name"] for doc in documents(KUBE / "deployment.yaml")}
    assert names == {"fabric"}


def test_the_configmap_holds_a_valid_fabric_manifest() -> None:
    text = generated_configmap()["data"]["fabric.toml"]
    manifest = loads_manifest(text, path="fabric.toml", base_dir=str(KUBE))
    validate(manifest, import_native=True)  # the dbpool config against its type, too
    assert manifest.workloads == load_manifest(KUBE / "fabric.toml").workloads
    # the Deployment mounts it where the image's entrypoint reads it
    volumes = by_kind("Deployment")["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if "configMap" in v]
    assert volume["configMap"]["name"] == generated_configmap()["metadata"]["name"]
    (mount,) = [m for m in container()["volumeMounts"] if m["name"] == volume["name"]]
    entrypoint = re.search(r"^ENTRYPOINT (.*)$", (DEPLOY / "Containerfile").read_text(), re.M)
    assert entrypoint is not None
    assert yaml.safe_load(entrypoint.group(1)) == [
        "fabric",
        "run",
        f"{mount['mountPath']}/fabric.toml",
    ]


def test_ports_probes_and_scraping_agree_with_the_manifest() -> None:
    manifest = load_manifest(KUBE / "fabric.toml")
    assert manifest.metrics is not None
    listen = split_listen(manifest.metrics.listen)
    assert listen is not None and listen[0] == "0.0.0.0"  # reachable from the kubelet
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert ports["metrics"] == listen[1]
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert container()[probe]["httpGet"] == {"path": path, "port": "metrics"}
    annotations = by_kind("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(listen[1])
    assert annotations["prometheus.io/path"] == "/metrics"
    # every ingress host port is a container port and a port of the Service
    service_ports = {p["targetPort"] for p in by_kind("Service")["spec"]["ports"]}
    ingress = {rule.host_port for w in manifest.workloads for rule in w.ingress}
    assert ingress and ingress <= set(ports.values())
    named = {name for name, port in ports.items() if port in ingress}
    assert named | {"metrics"} == service_ports
    for w in manifest.workloads:
        assert all(rule.host == "0.0.0.0" for rule in w.ingress)
    # the ServiceMonitor selects the Service and scrapes its metrics port
    monitor = by_kind("ServiceMonitor")
    labels = by_kind("Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_the_secret_paths_and_image_paths_agree() -> None:
    manifest = load_manifest(KUBE / "fabric.toml")
    (dbpool,) = [s for w in manifest.workloads for s in w.services if s.native]
    secret_file = Path(dbpool.config["auth"]["secret_file"])
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in by_kind("Deployment")["spec"]["template"]["spec"]["volumes"]}
    (secret_volume,) = [name for name, v in volumes.items() if "secret" in v]
    assert str(secret_file.parent) == mounts[secret_volume]
    items = volumes[secret_volume]["secret"]["items"]
    assert secret_file.name in {item["path"] for item in items}
    # components come from deploy/components, installed under /opt/fabric/share/fabric
    for w in manifest.workloads:
        for c in w.components:
            assert c.python is not None
            relative = Path(c.python).relative_to("/opt/fabric/share/fabric/components")
            assert (DEPLOY / "components" / relative / "app.py").is_file()
    steps = (DEPLOY / "image-steps.sh").read_text()
    assert "share/fabric/components" in steps
    assert "image-steps.sh /src /opt/fabric /etc/fabric" in (DEPLOY / "Containerfile").read_text()
    # the caches the Containerfile points at are the Deployment's writable volumes
    containerfile = (DEPLOY / "Containerfile").read_text()
    assert "FABRIC_CACHE_DIR=/var/cache/fabric" in containerfile
    assert "FABRIC_CONTROL=/run/fabric/control.sock" in containerfile
    assert {"/var/cache/fabric", "/run/fabric", "/tmp"} <= set(mounts.values())
    assert "HOME=/tmp" in containerfile and "XDG_CACHE_HOME=/var/cache/fabric/" in containerfile
    # the pod runs as the image's user
    user = re.search(r"^USER (\d+):(\d+)$", containerfile, re.M)
    assert user is not None
    pod = by_kind("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(user.group(1)), int(user.group(2)))


def test_the_hpa_scales_on_a_metric_the_adapter_serves_from_fabric() -> None:
    hpa = by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == by_kind("Deployment")["metadata"]["name"]
    (pods,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    (values,) = documents(KUBE / "autoscaling" / "prometheus-adapter-values.yaml")
    (rule,) = values["rules"]["custom"]
    assert rule["name"]["as"] == pods["metric"]["name"]
    series = re.match(r"(\w+)\{", rule["seriesQuery"])
    assert series is not None
    # the series is one fabric exposes, and the HPA's selector labels exist on it
    histogram = Histogram(bounds=LATENCY_BOUNDS, counts=(0,) * (len(LATENCY_BOUNDS) + 1))
    visits = ComponentStatus(name="visits", concurrency=1, queue=0, histogram=histogram)
    report = StatusReport(workloads=(WorkloadStatus(name="web", components=(visits,)),))
    collector = FabricCollector(lambda: report)
    samples = {s.name: s.labels for family in collector.collect() for s in family.samples}
    assert series.group(1) in samples
    assert pods["metric"]["selector"]["matchLabels"].items() <= samples[series.group(1)].items()
