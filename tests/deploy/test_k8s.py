"""deploy/k8s/: every manifest against the Kubernetes schemas, offline, and the wiring between them.

The schemas come with kubernetes-validate (a test dependency). The ServiceMonitor is a Prometheus
Operator CRD that no package on the registries ships a schema for, so it is checked by hand against
the Service it selects instead of by schema.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from unittest import mock

import kubernetes_validate
import pytest
import yaml

from onwards.config import parse_config_bytes
from tests.deploy.conftest import shutdown_wait_s
from tests.support.processes import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
# The oldest Kubernetes minor these manifests promise to work on, and the newest the package knows.
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def documents() -> list[dict[str, Any]]:
    docs = []
    for name in kustomization()["resources"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / name).read_text()) if d)
    return docs


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def test_kustomization_lists_every_manifest():
    listed = set(kustomization()["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version):
    checked = 0
    for doc in documents():
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            continue
        # strict: a misspelt or misplaced field is an error, not silently dropped.
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 9


def test_the_schema_check_catches_a_mistake():
    deployment = one("Deployment", "onwards")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


def pod_spec() -> dict[str, Any]:
    return one("Deployment", "onwards")["spec"]["template"]["spec"]


def container() -> dict[str, Any]:
    return pod_spec()["containers"][0]


def test_probes_health_for_liveness_ready_for_readiness():
    c = container()
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_grace_period_covers_prestop_and_the_shutdown_wait():
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    grace = pod_spec()["terminationGracePeriodSeconds"]
    env = {e["name"]: e["value"] for e in container()["env"] if "value" in e}
    assert grace > pre_stop + shutdown_wait_s(env), (
        "the gateway's shutdown wait outgrew terminationGracePeriodSeconds in deploy/k8s/deployment.yaml"
    )


def test_non_root_read_only_root_and_a_memory_backed_tmp():
    pod = pod_spec()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    c = container()
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    metrics_dir = next(e["value"] for e in c["env"] if e["name"] == "ONWARDS_METRICS_DIR")
    writable = [path for name, path in mounts.items() if "emptyDir" in volumes[name]]
    assert any(metrics_dir.startswith(path.rstrip("/") + "/") for path in writable)
    assert volumes["tmp"]["emptyDir"]["medium"] == "Memory"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]


def test_configmap_config_loads_with_the_secret_values():
    config = one("ConfigMap", "onwards-config")["data"]["config.json"]
    secret = one("Secret", "onwards-secrets")["stringData"]
    referenced = set(re.findall(r"\$\{([A-Z_]+)\}", config))
    assert referenced <= set(secret), referenced - set(secret)
    mount = next(m for m in container()["volumeMounts"] if m["name"] == "config")["mountPath"]
    assert container()["args"] == ["-f", f"{mount}/config.json"]
    with mock.patch.dict(os.environ, secret):
        snapshot = parse_config_bytes(config.encode(), "configmap")
    assert snapshot.targets["demo"].providers[0].mock is not None
    assert container()["envFrom"][0]["secretRef"]["name"] == "onwards-secrets"


def test_service_hpa_pdb_and_servicemonitor_select_the_pods():
    labels = one("Deployment", "onwards")["spec"]["template"]["metadata"]["labels"]
    service = one("Service", "onwards")
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
    container_ports = {p["name"] for p in container()["ports"]}
    assert set(ports.values()) <= container_ports
    hpa = one("HorizontalPodAutoscaler", "onwards")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "onwards" and hpa["spec"]["minReplicas"] >= 2
    assert one("PodDisruptionBudget", "onwards")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    monitor = one("ServiceMonitor", "onwards")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in ports


def test_redis_url_points_at_the_redis_service():
    url = one("Secret", "onwards-secrets")["stringData"]["ONWARDS_REDIS_URL"]
    redis_service = one("Service", "redis")
    assert url == f"redis://{redis_service['metadata']['name']}:{redis_service['spec']['ports'][0]['port']}/0"


def test_files_are_plain_yaml_without_tabs():
    for path in Path(K8S).glob("*.yaml"):
        assert "\t" not in path.read_text(), path
