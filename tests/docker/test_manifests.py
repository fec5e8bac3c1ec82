"""compose.yaml, nginx.conf and the Kubernetes manifests: they parse, and their paths and ports match
the service and the image."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml  # PyYAML, in the dev extra

from tests.docker.dockerfile import parse

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
K8S = DOCKER / "k8s"


def _k8s_docs() -> dict[str, dict]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[doc["kind"]] = doc
    return docs


@pytest.fixture(scope="module")
def image():
    return parse(DOCKER / "Dockerfile")


@pytest.fixture(scope="module")
def service_routes() -> set[str]:
    """GET paths of the real app's OpenAPI schema (no bundles are loaded to build it)."""
    from service.main import app

    return {path for path, methods in app.openapi()["paths"].items() if "get" in methods}


def test_compose_runs_replicas_behind_nginx(image):
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    bert, lb = compose["services"]["bert"], compose["services"]["lb"]
    assert (DOCKER / bert["build"]["context"] / bert["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert bert["deploy"]["replicas"] >= 2
    targets = [v.rsplit(":", 2)[1] for v in bert["volumes"]]  # SOURCE:TARGET:ro, SOURCE may hold ${X:-y}
    assert image.env["BERTKIT_BUNDLE_ROOT"] in targets
    assert all(v.endswith(":ro") for v in bert["volumes"]), "replicas only read the bundles"
    assert bert["expose"] == [image.env["PORT"]]
    assert "ports" not in bert, "replicas are reached through the load balancer only"
    assert lb["depends_on"]["bert"]["condition"] == "service_healthy"  # the image's HEALTHCHECK on /ready
    host_port, lb_port = lb["ports"][0].split(":")
    assert host_port == "8000"
    source, target = lb["volumes"][0].split(":")[:2]
    conf = (DOCKER / source).read_text()
    assert target.startswith("/etc/nginx/")
    assert re.search(rf"listen\s+{lb_port};", conf)
    upstream = re.search(r"upstream\s+(\w+)\s*\{([^}]*)\}", conf)
    assert upstream and re.search(rf"server\s+bert:{image.env['PORT']}\b", upstream.group(2))
    assert f"proxy_pass http://{upstream.group(1)};" in conf
    assert conf.count("{") == conf.count("}")


def test_k8s_manifests_parse_and_agree(image, service_routes):
    docs = _k8s_docs()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PersistentVolumeClaim"} <= set(docs)
    deployment, service, hpa, pvc = (
        docs["Deployment"],
        docs["Service"],
        docs["HorizontalPodAutoscaler"],
        docs["PersistentVolumeClaim"],
    )
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(image.env["PORT"]) and ports["http"] in image.expose

    probes = {name: container[name]["httpGet"] for name in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/ready"
    assert probes["livenessProbe"]["path"] == "/health"
    for probe in [*probes.values(), container["startupProbe"]["httpGet"]]:
        assert probe["path"] in service_routes, f"{probe['path']} is not a route of the service"
        assert probe["port"] in ports or probe["port"] == ports["http"]

    requests = container["resources"]["requests"]
    assert "cpu" in requests and "memory" in requests
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    uid = re.search(r"--uid (\d+)", " ".join(rest for kw, rest in image.instructions if kw == "RUN")).group(1)
    assert pod["spec"]["securityContext"]["runAsUser"] == int(uid)
    # Drain on SIGTERM needs more time than the service's own drain timeout.
    from service.config import ServiceSettings

    drain = ServiceSettings.model_fields["drain_timeout_s"].default
    assert pod["spec"]["terminationGracePeriodSeconds"] > drain

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["bundles"] == image.env["BERTKIT_BUNDLE_ROOT"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["bundles"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]

    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert all(p["targetPort"] in ports or p["targetPort"] in ports.values() for p in service["spec"]["ports"])
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]

    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"
    )
