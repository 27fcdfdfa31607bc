"""deploy/compose/: the compose file against the Compose Specification schema, and its wiring.

The schema is the copy check-jsonschema ships (a test dependency), so this runs offline. Beyond the
schema: the replicas follow one pushed config, nginx and Prometheus name every replica, every
mounted file exists, the root filesystems are read-only, and no secret is written in the files.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import shutdown_wait_s
from tests.support.processes import REPO_ROOT

COMPOSE_DIR = REPO_ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def errors(doc: dict[str, Any]) -> list[str]:
    spec = schema()
    validator = jsonschema.validators.validator_for(spec)(spec)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def replicas(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in doc["services"].items()
        if svc.get("command", [None])[0] == "--config-from-redis"
    }


def test_compose_file_matches_the_compose_specification():
    assert errors(compose()) == []


def test_the_schema_check_catches_a_mistake():
    doc = copy.deepcopy(compose())
    doc["services"]["redis"]["restart_policy"] = "always"  # a field that does not exist
    doc["services"]["nginx"]["ports"] = "8080:8080"  # must be a list
    assert len(errors(doc)) >= 2


def test_at_least_two_replicas_follow_the_config_pushed_once():
    doc = compose()
    nodes = replicas(doc)
    assert len(nodes) >= 2
    push = doc["services"]["config-push"]
    assert push["command"][:2] == ["config", "push"]
    for svc in nodes.values():
        assert svc["image"] == push["image"]
        assert svc["depends_on"]["config-push"]["condition"] == "service_completed_successfully"
        assert svc["environment"]["ONWARDS_REDIS_URL"] == push["environment"]["ONWARDS_REDIS_URL"]
        assert svc["read_only"] is True
        assert any(t.startswith("/tmp") for t in svc["tmpfs"])


def test_nginx_balances_over_every_replica():
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", (COMPOSE_DIR / "nginx.conf").read_text(), re.M)
    assert sorted(upstreams) == sorted((name, "3000") for name in replicas(compose()))


def test_nginx_conf_is_valid_nginx(tmp_path: Path):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx is not installed")
    text = (COMPOSE_DIR / "nginx.conf").read_text()
    # Container names do not resolve here; loopback stands in for them.
    conf = tmp_path / "nginx.conf"
    conf.write_text(re.sub(r"server\s+[\w-]+:3000", "server 127.0.0.1:3000", text))
    argv = [nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    assert done.returncode == 0, done.stderr


def test_prometheus_scrapes_every_replica_metrics_port():
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert sorted(targets) == sorted(f"{name}:9090" for name in replicas(compose()))
    mounts = compose()["services"]["prometheus"]["volumes"]
    assert any(m.startswith("../prometheus/alerts.yml:") for m in mounts)
    assert config["rule_files"] == ["alerts.yml"]


def test_every_bind_mount_exists():
    doc = compose()
    for name, svc in doc["services"].items():
        for mount in svc.get("volumes", []):
            # A ${VAR:-default} source is checked with its default.
            source = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", mount).split(":")[0]
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source}"
            else:
                assert source in doc.get("volumes", {}), f"{name}: named volume {source} is not declared"


def test_grafana_gets_the_dashboard_and_a_prometheus_datasource():
    grafana = compose()["services"]["grafana"]
    assert any(
        m.startswith("../grafana/onwards-dashboard.json:/var/lib/grafana/dashboards/")
        for m in grafana["volumes"]
    )
    sources = yaml.safe_load((COMPOSE_DIR / "grafana" / "datasources.yml").read_text())["datasources"]
    assert [(s["type"], s["url"]) for s in sources] == [("prometheus", "http://prometheus:9090")]
    providers = yaml.safe_load((COMPOSE_DIR / "grafana" / "dashboards.yml").read_text())["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_secrets_come_from_the_environment():
    doc = compose()
    for name, svc in doc["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"KEY|PASSWORD|SECRET|TOKEN", key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:[-?][^}]*)?\}", str(value)), (
                    f"{name}.{key} is written in the file"
                )


def test_sentinel_profile_watches_the_primary():
    services = compose()["services"]
    sentinels = [
        n for n, s in services.items() if "sentinel" in s.get("profiles", []) and n.startswith("sentinel")
    ]
    assert len(sentinels) == 3
    command = services["sentinel-1"]["command"]
    joined = " ".join(command)
    assert "monitor onwards redis 6379 2" in joined
    replica = services["redis-replica"]["command"]
    at = replica.index("--replicaof")
    assert replica[at + 1 : at + 3] == ["redis", "6379"]


def test_stop_grace_period_covers_the_shutdown_wait():
    for name, svc in replicas(compose()).items():
        grace = svc["stop_grace_period"]
        assert grace.endswith("s"), grace
        assert float(grace[:-1]) > shutdown_wait_s(svc["environment"]), name
