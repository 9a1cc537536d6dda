"""deploy/kubernetes: rendered with ``kubectl kustomize``, validated against the
newest Kubernetes schema ``kubernetes-validate`` ships (strict: unknown fields
fail), and the XML it carries loaded by edgerq's own config loader.

No cluster runs here: these checks are what "validated, not run" means.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from edgerq.config import load_consumer, load_provider

BASE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed (apt-get install kubernetes-client)"
)


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(BASE)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_every_resource_validates_strictly(rendered: list[dict[str, Any]]) -> None:
    version = kubernetes_validate.latest_version()
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(
        ["ConfigMap"] * 2
        + ["Deployment"] * 2
        + ["Service"] * 2
        + ["PodDisruptionBudget"] * 2
        + ["NetworkPolicy"] * 2
    )
    for doc in rendered:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_catches_a_mistake(rendered: list[dict[str, Any]]) -> None:
    """The check above would be worthless if it passed anything."""
    deployment = copy.deepcopy(by_kind(rendered, "Deployment")["edgerq-sc"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = (
        "/readyz"
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_pods_are_locked_down_probed_and_limited(rendered: list[dict[str, Any]]) -> None:
    deployments = by_kind(rendered, "Deployment")
    assert set(deployments) == {"edgerq-sc", "edgerq-sp"}
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
        pod = spec["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert container["image"] == "edgerq:0.1.0"
    budgets = by_kind(rendered, "PodDisruptionBudget")
    assert {
        b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        for b in budgets.values()
    } == {"sc", "sp"}
    policies = by_kind(rendered, "NetworkPolicy")
    assert {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in policies.values()
    } == {"sc", "sp"}
    # nothing may open a connection to an SP
    sp_policy = policies["edgerq-sp"]["spec"]
    assert [port["port"] for rule in sp_policy["ingress"] for port in rule["ports"]] == [9100]


def test_the_xml_loads_and_both_sides_agree(rendered: list[dict[str, Any]], tmp_path: Path) -> None:
    maps = by_kind(rendered, "ConfigMap")
    (sc_map,) = [m for n, m in maps.items() if n.startswith("edgerq-sc-config")]
    (sp_map,) = [m for n, m in maps.items() if n.startswith("edgerq-sp-config")]
    (tmp_path / "consumer.xml").write_text(sc_map["data"]["consumer.xml"])
    (tmp_path / "provider.xml").write_text(sp_map["data"]["provider.xml"])
    env = {"EDGERQ_AUTH_TOKEN": "test"}
    sc = load_consumer(tmp_path / "consumer.xml", env)
    sp = load_provider(tmp_path / "provider.xml", env)

    (pipe,) = sp.pipes
    headless = by_kind(rendered, "Service")["edgerq-sc-pipes"]["spec"]
    assert headless["clusterIP"] == "None"
    assert pipe.all_addresses and pipe.hostname == "edgerq-sc-pipes"
    assert (pipe.protocol, pipe.port) == ("udp", headless["ports"][0]["port"])
    assert (sc.listener.protocol, sc.listener.port) == ("udp", pipe.port)
    assert {s.uuid for s in pipe.services} == {s.uuid for s in sc.services}
    assert sc.admin is not None and sc.admin.port == 9100 and sc.admin.inaddr_any
    assert sp.admin is not None and sp.admin.port == 9100 and sp.admin.inaddr_any
