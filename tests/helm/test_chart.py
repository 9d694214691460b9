"""charts/agent-mesh rendered by helm: what a user gets with each kind of value set, and the
values helm refuses (values.schema.json), each refusal naming the field."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_mesh.devcluster import manifests
from tests.helm.conftest import CHART, TAILSCALE_VALUES, env_of, only, render, run_helm
from tests.support.venvs import ROOT

VALUE_SETS: dict[str, list[str]] = {
    "defaults": [],
    "watched-namespaces": ["--set", "watchNamespaces={team-a,team-b}"],
    "cert-manager": ["--set", "certManager.enabled=true"],
    "everything": [
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true",
        "--set",
        "networkPolicy.enabled=true,networkMode=tailscale,meshApi.tls=false",
        "--set",
        "nodeSelector.disk=ssd,podAnnotations.team=mesh,priorityClassName=high",
        "--set-json",
        'tolerations=[{"key":"dedicated","operator":"Exists"}]',
        "--set-json",
        'extraEnv=[{"name":"AGENT_MESH_BATCH_DISPATCH","value":"true"}]',
        "--set-json",
        'aclPolicies=[{"name":"w","namespace":"team-a","spec":{"agentType":"worker"}}]',
    ],
    "tailscale": TAILSCALE_VALUES,
}


def test_chart_version_app_version_and_image_tag_follow_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == version, "Chart.yaml version differs from pyproject.toml"
    assert chart["appVersion"] == version, "Chart.yaml appVersion differs from pyproject.toml"
    assert chart["kubeVersion"]


def test_the_default_image_is_the_package_version(helm: Path) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    deployment = only(render(helm), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"agent-mesh:{version}"
    )


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_the_chart_lints_clean(helm: Path, name: str) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART), *VALUE_SETS[name])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_operator_runs_once_listens_in_the_pod_and_is_probed(helm: Path) -> None:
    deployment = only(render(helm), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    env = env_of(deployment)
    assert env["AGENT_MESH_OPERATOR_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    for listener in ("MESH", "WEBHOOK", "LIVENESS"):
        assert env[f"AGENT_MESH_{listener}_HOST"] == "0.0.0.0"
    assert env["AGENT_MESH_WEBHOOK_REGISTRATION"] == "ca-bundle"
    assert "AGENT_MESH_NAMESPACES" not in env  # all namespaces
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "mesh",
        "scheme": "HTTPS",
    }
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # PodSecurity `restricted`
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_the_webhook_certificate_names_the_webhook_and_metrics_services(helm: Path) -> None:
    objects = render(helm, namespace="mesh")
    names = env_of(only(objects, "Deployment"))["AGENT_MESH_TLS_EXTRA_SANS"].split(",")
    webhook = only(objects, "ValidatingWebhookConfiguration")["webhooks"][0]
    service = webhook["clientConfig"]["service"]
    assert f"{service['name']}.{service['namespace']}.svc" in names
    assert only(objects, "Service", service["name"])["spec"]["ports"][0]["port"] == 443
    assert "agent-mesh-metrics.mesh.svc" in names


def _rules(role: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (group, resource, verb, ",".join(rule.get("resourceNames", [])))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]


def test_cluster_wide_by_default_namespaced_roles_when_namespaces_are_listed(
    helm: Path,
) -> None:
    cluster_wide = render(helm)
    cluster_role = only(cluster_wide, "ClusterRole")
    assert ("agentmesh.io", "meshtasks", "watch", "") in _rules(cluster_role)
    assert ("", "namespaces", "list", "") not in _rules(cluster_role)

    listed = render(helm, *VALUE_SETS["watched-namespaces"])
    env = env_of(only(listed, "Deployment"))
    assert env["AGENT_MESH_NAMESPACES"] == '["team-a","team-b"]'
    cluster_role = only(listed, "ClusterRole")
    assert not any(group == "agentmesh.io" for group, *_ in _rules(cluster_role))
    assert not any(resource == "secrets" for _, resource, *_ in _rules(cluster_role))
    watched = [
        o for o in listed if o["kind"] == "Role" and o["metadata"]["name"].endswith("-watched")
    ]
    assert sorted(r["metadata"]["namespace"] for r in watched) == ["team-a", "team-b"]
    assert ("agentmesh.io", "meshtasks/status", "patch", "") in _rules(watched[0])
    webhook = only(listed, "ValidatingWebhookConfiguration")["webhooks"][0]
    assert webhook["namespaceSelector"]["matchExpressions"][0]["values"] == ["team-a", "team-b"]


def test_the_operator_reaches_its_own_secrets_and_webhook_by_name_only(helm: Path) -> None:
    objects = render(helm)
    own = _rules(only(objects, "Role", "agent-mesh-own"))
    assert ("", "secrets", "get", "agent-mesh-signing-keys,agent-mesh-ca") in own
    assert ("", "configmaps", "update", "agent-mesh-revocations,agent-mesh-ca.crt") in own
    assert not {verb for _, _, verb, _ in own} & {"list", "watch", "delete"}
    configuration = only(objects, "ValidatingWebhookConfiguration")["metadata"]["name"]
    cluster = _rules(only(objects, "ClusterRole"))
    assert only(objects, "MutatingWebhookConfiguration")["metadata"]["name"] == configuration
    webhook_rules = [r for r in cluster if r[1].endswith("webhookconfigurations")]
    assert sorted(webhook_rules) == sorted(
        ("admissionregistration.k8s.io", f"{kind}webhookconfigurations", verb, configuration)
        for kind in ("validating", "mutating")
        for verb in ("get", "update")
    )
    delegator = [
        o
        for o in objects
        if o["kind"] == "ClusterRoleBinding" and o["roleRef"]["name"] == "system:auth-delegator"
    ]
    assert len(delegator) == 1


def test_with_cert_manager_the_injector_fills_the_ca_bundle_not_the_operator(helm: Path) -> None:
    objects = render(helm, *VALUE_SETS["cert-manager"])
    env = env_of(only(objects, "Deployment"))
    assert env["AGENT_MESH_WEBHOOK_REGISTRATION"] == "external"
    certificate = only(objects, "Certificate")
    assert env["AGENT_MESH_TLS_SECRET"] == certificate["spec"]["secretName"]
    annotations = only(objects, "ValidatingWebhookConfiguration")["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == "agent-mesh-system/agent-mesh"
    assert not any(
        r[1].endswith("webhookconfigurations") for r in _rules(only(objects, "ClusterRole"))
    )
    assert only(objects, "Issuer")["spec"] == {"selfSigned": {}}


def test_optional_objects_and_pod_placement_come_from_values(helm: Path) -> None:
    objects = render(helm, *VALUE_SETS["everything"])
    kinds = {o["kind"] for o in objects}
    assert {"ServiceMonitor", "PodMonitor", "NetworkPolicy", "ACLPolicy"} <= kinds
    deployment = only(objects, "Deployment")
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"team": "mesh"}
    assert pod["spec"]["nodeSelector"] == {"disk": "ssd"}
    assert pod["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    env = env_of(deployment)
    assert env["AGENT_MESH_BATCH_DISPATCH"] == "true"
    assert env["AGENT_MESH_DEFAULT_NETWORK"] == "tailscale"
    assert pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert only(objects, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "http"


def test_the_chart_webhooks_are_the_operators_handlers(helm: Path) -> None:
    """Each webhook's path is an admission handler's id, and the chart declares the
    webhooks field by field as the operator registers them itself (webhook_registration=
    self), with the chart's defaults and its namespace as the operator's."""
    import kopf

    from agent_mesh.config import OperatorConfig
    from agent_mesh.controllers import admission

    registry = kopf.OperatorRegistry()
    with pytest.MonkeyPatch.context() as patch:
        for kind in ("validate", "mutate"):
            patch.setattr(kopf.on, kind, _registering_into(registry, getattr(kopf.on, kind)))
        admission.register()
    handlers = sorted(h.id for h in registry._webhooks.get_all_handlers())
    objects = render(helm)
    validating = only(objects, "ValidatingWebhookConfiguration")
    mutating = only(objects, "MutatingWebhookConfiguration")
    declared = [*validating["webhooks"], *mutating["webhooks"]]
    assert sorted(w["clientConfig"]["service"]["path"].lstrip("/") for w in declared) == handlers
    name = validating["metadata"]["name"]
    assert mutating["metadata"]["name"] == name
    config = OperatorConfig(webhook_configuration=name, operator_namespace="agent-mesh-system")
    service = {k: v for k, v in declared[0]["clientConfig"]["service"].items() if k != "path"}
    built_validating, built_mutating = admission.webhooks(config, {"service": service})
    assert validating["webhooks"] == built_validating
    assert mutating["webhooks"] == built_mutating


def test_the_injection_webhook_sees_only_labelled_pods_outside_system_namespaces(
    helm: Path,
) -> None:
    objects = render(helm, namespace="mesh")
    (webhook,) = only(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert webhook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE"],
            "scope": "Namespaced",
        }
    ]
    assert webhook["objectSelector"] == {
        "matchExpressions": [
            {"key": "agentmesh.io/agent", "operator": "Exists"},
            {"key": "app.kubernetes.io/managed-by", "operator": "NotIn", "values": ["agent-mesh"]},
        ]
    }
    assert webhook["namespaceSelector"] == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "kube-public", "kube-node-lease", "mesh"],
            }
        ]
    }
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["timeoutSeconds"] == 5
    assert webhook["reinvocationPolicy"] == "Never"
    assert webhook["sideEffects"] == "None"

    listed = render(helm, *VALUE_SETS["watched-namespaces"])
    (webhook,) = only(listed, "MutatingWebhookConfiguration")["webhooks"]
    assert webhook["namespaceSelector"]["matchExpressions"][1] == {
        "key": "kubernetes.io/metadata.name",
        "operator": "In",
        "values": ["team-a", "team-b"],
    }
    tuned = render(
        helm, "--set", "webhook.inject.failurePolicy=Ignore,webhook.inject.timeoutSeconds=3"
    )
    (webhook,) = only(tuned, "MutatingWebhookConfiguration")["webhooks"]
    assert (webhook["failurePolicy"], webhook["timeoutSeconds"]) == ("Ignore", 3)
    off = render(helm, "--set", "webhook.inject.enabled=false")
    assert not [o for o in off if o["kind"] == "MutatingWebhookConfiguration"]
    assert only(off, "ValidatingWebhookConfiguration")
    managed = render(helm, *VALUE_SETS["cert-manager"])
    annotations = only(managed, "MutatingWebhookConfiguration")["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == "agent-mesh-system/agent-mesh"


def _registering_into(registry: Any, real: Any) -> Any:
    def register(*args: Any, **kwargs: Any) -> Any:
        return real(*args, registry=registry, **kwargs)

    return register


@pytest.mark.parametrize(
    ("values", "field"),
    [
        (["--set", "replicas=-1"], "replicas"),
        (["--set", "replicas=2"], "replicas"),
        (["--set", "networkMode=wireguard"], "networkMode"),
        (["--set", "replica=1"], "replica"),
        (["--set", "image.repository="], "image.repository"),
        (["--set", "watchNamespaces={Team_A}"], "watchNamespaces"),
        (["--set", "ports.mesh=70000"], "ports.mesh"),
        (["--set", "webhook.failurePolicy=Sometimes"], "webhook.failurePolicy"),
        (["--set", "webhook.inject.failurePolicy=Sometimes"], "webhook.inject.failurePolicy"),
        (["--set", "webhook.inject.timeoutSeconds=60"], "webhook.inject.timeoutSeconds"),
        (["--set", "tailscale.enable=true"], "tailscale.enable"),
        (["--set", "tailscale.enabled=true"], "tailscale.tailnetDomain"),
        (["--set", "tailscale.tailnetDomain=Not_A_Domain"], "tailscale.tailnetDomain"),
        (["--set", "tailscale.image.tag=latest"], "tailscale.image.tag"),
        (["--set", "tailscale.image.tag=stable"], "tailscale.image.tag"),
        (["--set", "tailscale.image.tag="], "tailscale.image.tag"),
        (["--set", "tailscale.controlURL=ftp://headscale"], "tailscale.controlURL"),
        (["--set", "tailscale.hostname=Operator_1"], "tailscale.hostname"),
        (["--set", "tailscale.authKeySecret.name="], "tailscale.authKeySecret.name"),
        (["--set", "tailscale.agentAuthKeySecret="], "tailscale.agentAuthKeySecret"),
        (["--set", "tailscale.headscaleApiKeySecret.name=api"], "tailscale.controlURL"),
        (["--set", "tailscale.proxyPort=0"], "tailscale.proxyPort"),
    ],
)
def test_values_outside_the_schema_are_refused_naming_the_field(
    helm: Path, values: list[str], field: str
) -> None:
    proc = run_helm(helm, "template", "agent-mesh", str(CHART), *values)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    leaf = field.rsplit(".", 1)[-1]
    assert f"/{field.replace('.', '/')}" in proc.stderr or f"'{leaf}'" in proc.stderr, proc.stderr


def test_config_matches_the_chart(helm: Path) -> None:
    """The drift test of config/{crd,rbac,manager,default}: a fresh rendering of the chart."""
    expected = manifests.kustomize_files(manifests.render_chart(helm, CHART))
    config = ROOT / "config"
    on_disk = {
        f"{base}/{path.name}": path.read_text(encoding="utf-8")
        for base in ("crd", "rbac", "manager", "default")
        for path in sorted((config / base).glob("*.yaml"))
    }
    stale = sorted(k for k in expected.keys() | on_disk.keys() if expected.get(k) != on_disk.get(k))
    assert not stale, (
        f"config/ differs from charts/agent-mesh in {stale}: run `agent-mesh manifests "
        "--write` (or `make manifests`) and commit config/"
    )
