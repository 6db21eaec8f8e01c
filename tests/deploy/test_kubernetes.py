"""deploy/kubernetes: every manifest against the Kubernetes schemas, offline, and what ties them
together (probe paths the app serves, grace periods above the drain, a config `check` accepts,
selectors, ports and names that match). No cluster runs here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from starlette.testclient import TestClient

from gateway.app import build_app
from gateway.cli import _parser
from gateway.config._loader import parse_document
from gateway.config.models import GatewayConfig, HttpServer
from gateway.config.validation import validate_document
from gateway.host import host_document
from tests._infra import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy" / "kubernetes"
# The newest Kubernetes whose schemas the pinned kubernetes-validate ships.
KUBERNETES = "1.37"
# What the kubelet sends as Host when a probe names none: the pod's IP and port.
POD_HOST = "10.1.2.3:8765"


def _manifests() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def _documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in _manifests():
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield path, document


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _container(deployment: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _one("Deployment", deployment)["spec"]["template"]["spec"][
        "containers"
    ]
    assert len(containers) == 1
    return containers[0]


def _gateway_yaml() -> str:
    text: str = _one("ConfigMap", "mcp-gateway-config")["data"]["gateway.yaml"]
    return text


def _secret_env(deployment: str) -> dict[str, str]:
    """The variables the Deployment fills from Secrets, each with a stand-in value (64 bytes)."""
    return {
        entry["name"]: f"stand-in-{entry['name'].lower()}-".ljust(64, "x")
        for entry in _container(deployment).get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }


def _replicas_config(monkeypatch: pytest.MonkeyPatch) -> GatewayConfig:
    for name, value in _secret_env("mcp-gateway").items():
        monkeypatch.setenv(name, value)
    return validate_document(parse_document(_gateway_yaml(), "gateway.yaml")).config


def _host_args() -> Any:
    return _parser().parse_args(_container("mcp-time")["args"])


def _host_config(monkeypatch: pytest.MonkeyPatch) -> GatewayConfig:
    for name, value in _secret_env("mcp-time").items():
        monkeypatch.setenv(name, value)
    args = _host_args()
    command = args.server[1:] if args.server[:1] == ["--"] else args.server
    document = host_document(
        command,
        name=args.name,
        listen=args.listen,
        api_key_env=args.api_key_env,
        allowed_hosts=args.allowed_host,
    )
    return validate_document(document).config


def _probes(deployment: str) -> list[dict[str, Any]]:
    container = _container(deployment)
    return [
        container[k]["httpGet"] for k in ("readinessProbe", "livenessProbe", "startupProbe") if k in container
    ]


def _port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    assert numbers, f"no container port named {port!r}"
    return int(numbers[0])


def test_every_manifest_is_valid_against_the_kubernetes_schemas() -> None:
    kinds = set()
    for path, document in _documents():
        try:
            kubernetes_validate.validate(document, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {document['kind']}/{document['metadata']['name']}: {exc.message}")
        kinds.add((document["kind"], document["metadata"]["name"]))
    assert {
        ("ConfigMap", "mcp-gateway-config"),
        ("Deployment", "mcp-gateway"),
        ("Service", "mcp-gateway"),
        ("PodDisruptionBudget", "mcp-gateway"),
        ("Deployment", "mcp-redis"),
        ("Service", "mcp-redis"),
        ("Deployment", "mcp-time"),
        ("Service", "mcp-time"),
    } <= kinds


def test_the_validator_refuses_a_broken_manifest() -> None:
    broken = _one("Deployment", "mcp-gateway")
    broken["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "forty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == [p.name for p in _manifests()]


def test_the_configmap_passes_check_no_start(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(_gateway_yaml())
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--no-start", "--config", str(config)],
        cwd=REPO_ROOT,
        env={**os.environ, **_secret_env("mcp-gateway")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # Every reference is one the Deployment fills from its Secret.
    assert set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", _gateway_yaml())) <= set(
        _secret_env("mcp-gateway")
    )


def test_the_replicas_serve_their_mounted_config(monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = _one("Deployment", "mcp-gateway")
    container = _container("mcp-gateway")
    args = _parser().parse_args(container["args"])
    assert args.command == "serve"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == "mcp-gateway-config"
    assert Path(args.config) == Path(mount["mountPath"]) / "gateway.yaml"
    config = _replicas_config(monkeypatch)
    assert _port(container, "mcp") == config.listen.port
    assert config.listen.host == "0.0.0.0"  # reachable from the Service


@pytest.mark.parametrize("deployment", ["mcp-gateway", "mcp-time"])
def test_probes_reach_routes_the_app_serves(deployment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _replicas_config(monkeypatch) if deployment == "mcp-gateway" else _host_config(monkeypatch)
    container = _container(deployment)
    probes = _probes(deployment)
    assert {p["path"] for p in probes} >= {"/readyz", "/healthz"}
    # Routes only: the lifespan (which starts the fleet) is not entered.
    client = TestClient(build_app(config), base_url=f"http://{POD_HOST}")
    for probe in probes:
        assert _port(container, probe["port"]) == config.listen.port
        headers = {h["name"]: h["value"] for h in probe.get("httpHeaders", [])}
        answer = client.get(probe["path"], headers=headers)
        # /readyz is 503 here (no backend runs), which a readiness probe must be able to see.
        assert answer.status_code in (200, 503) and answer.headers["content-type"] == "application/json"
        # Without the Host header the kubelet would send the pod's address, which the gateway refuses.
        assert client.get(probe["path"]).status_code == 421


@pytest.mark.parametrize("deployment", ["mcp-gateway", "mcp-time"])
def test_the_grace_period_covers_prestop_and_drain(deployment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _replicas_config(monkeypatch) if deployment == "mcp-gateway" else _host_config(monkeypatch)
    pod = _one("Deployment", deployment)["spec"]["template"]["spec"]
    pre_stop = _container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The fleet's own stop follows the drain: leave it time too (a stdio server's grace and kill).
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + config.listen.drain_timeout + 10


def test_the_replicas_reach_the_hosted_server_through_its_service(monkeypatch: pytest.MonkeyPatch) -> None:
    replicas = _replicas_config(monkeypatch)
    spec = replicas.servers["time"]
    assert isinstance(spec, HttpServer)
    url = urlsplit(spec.url)
    service = _one("Service", "mcp-time")
    assert url.hostname == service["metadata"]["name"]
    port = next(p for p in service["spec"]["ports"] if p["port"] == url.port)
    host = _container("mcp-time")
    assert _port(host, port["targetPort"]) == _host_config(monkeypatch).listen.port
    # The key the replicas send is the one the host requires: the same Secret entry.
    assert spec.headers == {"X-API-Key": "${env:MCP_HOST_KEY}"}
    args = _host_args()
    assert args.command == "host" and args.api_key_env == "MCP_HOST_KEY"
    assert _secret_env("mcp-time").keys() == {"MCP_HOST_KEY"}
    both = [
        next(e for e in _container(d)["env"] if e["name"] == "MCP_HOST_KEY")["valueFrom"]
        for d in ("mcp-gateway", "mcp-time")
    ]
    assert both[0] == both[1]
    # The Host the replicas send is one the host accepts; an unauthenticated caller is refused.
    client = TestClient(build_app(_host_config(monkeypatch)), base_url=f"http://{url.netloc}")
    assert client.post(url.path, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).status_code == 401
    # The command runs once: one pod, the server's tools unprefixed (the replicas add `time__`).
    assert _one("Deployment", "mcp-time")["spec"]["replicas"] == 1
    assert _host_config(monkeypatch).servers["time"].prefix == ""


def test_services_and_budget_select_their_pods() -> None:
    for name in ("mcp-gateway", "mcp-redis", "mcp-time"):
        labels = _one("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        selector = _one("Service", name)["spec"]["selector"]
        assert selector.items() <= labels.items(), name
        for port in _one("Service", name)["spec"]["ports"]:
            _port(_container(name), port["targetPort"])
    budget = _one("PodDisruptionBudget", "mcp-gateway")["spec"]
    gateway = _one("Deployment", "mcp-gateway")["spec"]
    assert budget["selector"]["matchLabels"].items() <= gateway["template"]["metadata"]["labels"].items()
    assert budget["maxUnavailable"] < gateway["replicas"]
    # Every replica serves every session (ids sealed under the shared key): no affinity.
    assert _one("Service", "mcp-gateway")["spec"].get("sessionAffinity") in (None, "None")
    gateway_yaml = yaml.safe_load(_one("ConfigMap", "mcp-gateway-config")["data"]["gateway.yaml"])
    assert gateway_yaml["cluster"]["redis"] and gateway_yaml["state"]["keys"]


def test_the_rate_limit_counts_in_the_redis_service(monkeypatch: pytest.MonkeyPatch) -> None:
    replicas = _replicas_config(monkeypatch)
    storages = [m.options["storage"] for m in replicas.middleware if m.use == "ratelimit"]
    assert storages, "the replicas share a rate limit"
    url = urlsplit(storages[0])
    service = _one("Service", "mcp-redis")
    assert url.scheme == "redis" and url.hostname == service["metadata"]["name"]
    assert url.port in {p["port"] for p in service["spec"]["ports"]}
