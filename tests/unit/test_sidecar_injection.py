"""The tailscale sidecar injected into a labelled pod of your own (workloads/injection.py),
the objects the operator creates for it, and the webhook's configuration: exactly one
sidecar, the managed agents' one; idempotent; direct mode, a missing MeshAgent or a
managed agent leave the pod unchanged with a warning saying why; a pod that could not run
the sidecar is refused naming the field."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from agent_mesh.config import OperatorConfig
from agent_mesh.controllers.admission import INJECT_ID, webhooks
from agent_mesh.tailscale import sidecar
from agent_mesh.tailscale.sidecar import SidecarSettings
from agent_mesh.workloads.injection import Injection, inject
from agent_mesh.workloads.objects import injected_tailnet_objects

pytestmark = pytest.mark.unit

SETTINGS = SidecarSettings(
    image="tailscale/tailscale:v1.86.5",
    tailnet_domain="tailnet.test",
    login_server="http://10.244.0.1:8080",
)
USER_VOLUME = {"name": "data", "emptyDir": {}}


def _pod(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "mine",
            "namespace": "research",
            "labels": {"agentmesh.io/agent": "summarizer"},
        },
        "spec": {
            "serviceAccountName": "summarizer-sa",
            "containers": [{"name": "agent", "image": "agent:1.0"}],
            "volumes": [USER_VOLUME],
            **spec,
        },
    }


def _meshagent(network: str | None = "tailscale", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "agentmesh.io/v1alpha1",
        "kind": "MeshAgent",
        "metadata": {"name": "summarizer", "namespace": "research", "uid": "uid-1"},
        "spec": {
            "agentType": "worker",
            "agentId": "sum-1",
            "port": 8081,
            "serviceAccountName": "summarizer-sa",
            **spec,
        },
    }
    if network:
        body["spec"]["network"] = network
    return body


def _inject(
    pod: dict[str, Any],
    meshagent: dict[str, Any] | None,
    *,
    settings: SidecarSettings | None = SETTINGS,
    default_network: str = "direct",
) -> Injection:
    return inject(
        pod,
        meshagent,
        agent_name="summarizer",
        settings=settings,
        default_network=default_network,
    )


def _applied(pod: dict[str, Any], injection: Injection) -> dict[str, Any]:
    """The pod as the apiserver stores it after the webhook's patch."""
    patched = copy.deepcopy(pod)
    if injection.containers is not None:
        patched["spec"]["containers"] = injection.containers
        patched["spec"]["volumes"] = injection.volumes
    return patched


def test_a_labelled_pod_of_a_tailscale_agent_gets_exactly_the_managed_agents_sidecar() -> None:
    pod = _pod()
    injection = _inject(pod, _meshagent())
    assert injection.warning is None and injection.refusal is None
    assert injection.containers is not None and injection.volumes is not None
    names = [c["name"] for c in injection.containers]
    assert names == ["agent", "tailscale"]
    assert injection.containers[0] == pod["spec"]["containers"][0]  # the user's, untouched
    assert injection.containers[1] == sidecar.container(SETTINGS, "research", "sum-1", "summarizer")
    env = {e["name"]: e.get("value") for e in injection.containers[1]["env"]}
    assert env["TS_HOSTNAME"] == "agent-mesh-research-sum-1"
    assert env["TS_KUBE_SECRET"] == "summarizer-tailscale"
    assert env["TS_USERSPACE"] == "true"
    security = injection.containers[1]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in security
    assert injection.volumes == [USER_VOLUME, *sidecar.volumes("summarizer")]


def test_injection_is_idempotent_a_pod_with_the_sidecar_is_left_alone() -> None:
    once = _applied(_pod(), _inject(_pod(), _meshagent()))
    again = _inject(once, _meshagent())
    assert again == Injection()  # no patch, no warning, no refusal
    assert [c["name"] for c in _applied(once, again)["spec"]["containers"]] == [
        "agent",
        "tailscale",
    ]


@pytest.mark.parametrize(
    ("meshagent", "default_network", "says"),
    [
        (None, "tailscale", "MeshAgent research/summarizer does not exist"),
        (_meshagent("direct"), "tailscale", "has network direct: no tailscale sidecar"),
        (_meshagent(None), "direct", "has network direct: no tailscale sidecar"),
        (
            _meshagent(workload={"spec": {"containers": [{"name": "a", "image": "a:1"}]}}),
            "direct",
            "has spec.workload: the operator runs its pod",
        ),
    ],
)
def test_a_pod_whose_agent_is_not_injected_is_unchanged_and_the_warning_says_why(
    meshagent: dict[str, Any] | None, default_network: str, says: str
) -> None:
    injection = _inject(_pod(), meshagent, default_network=default_network)
    assert injection.containers is None and injection.volumes is None
    assert injection.refusal is None
    assert injection.warning is not None and says in injection.warning, injection.warning


def test_an_agent_of_the_default_network_tailscale_is_injected() -> None:
    injection = _inject(_pod(), _meshagent(None), default_network="tailscale")
    assert injection.containers is not None and len(injection.containers) == 2


def test_without_tailscale_settings_the_pod_is_unchanged_with_a_warning() -> None:
    injection = _inject(_pod(), _meshagent(), settings=None)
    assert injection.containers is None
    assert injection.warning is not None
    assert "AGENT_MESH_TAILSCALE_TAILNET_DOMAIN" in injection.warning


def test_a_pod_running_as_another_service_account_is_refused_naming_the_field() -> None:
    injection = _inject(_pod(serviceAccountName="default"), _meshagent())
    assert injection.containers is None
    assert injection.refusal is not None
    assert injection.refusal.startswith("spec.serviceAccountName: the pod runs as 'default'")
    assert "summarizer-tailscale" in injection.refusal
    unset = _pod()
    del unset["spec"]["serviceAccountName"]
    refusal = _inject(unset, _meshagent()).refusal
    assert refusal is not None and "runs as 'default'" in refusal


def test_a_pod_of_an_agent_naming_no_service_account_is_refused() -> None:
    agent = _meshagent()
    del agent["spec"]["serviceAccountName"]
    injection = _inject(_pod(), agent)
    assert injection.refusal is not None
    assert "has no spec.serviceAccountName" in injection.refusal


def test_a_pod_using_a_volume_name_of_the_sidecar_is_refused_naming_the_field() -> None:
    injection = _inject(_pod(volumes=[{"name": "tailscale-serve", "emptyDir": {}}]), _meshagent())
    assert injection.refusal is not None
    assert injection.refusal.startswith("spec.volumes: a volume is named tailscale-serve")


def test_the_injected_sidecars_objects_are_bound_to_the_agents_service_account_only() -> None:
    objects = injected_tailnet_objects(
        _meshagent(), default_network="direct", tailscale=SETTINGS, auth_key="a2V5"
    )
    assert objects is not None
    assert objects.role_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "summarizer-sa", "namespace": "research"}
    ]
    assert objects.role["rules"] == sidecar.role_rules("summarizer")
    assert objects.state_secret["metadata"]["name"] == "summarizer-tailscale"
    assert objects.auth_secret is not None
    assert objects.auth_secret["data"] == {"authkey": "a2V5"}
    assert objects.serve_config["metadata"]["name"] == "summarizer-tailscale-serve"
    for child in objects.all():
        assert child["metadata"]["ownerReferences"][0]["name"] == "summarizer"
    assert [o["kind"] for o in objects.all()] == [
        "Secret",
        "Secret",
        "ConfigMap",
        "Role",
        "RoleBinding",
    ]


@pytest.mark.parametrize(
    ("meshagent", "settings"),
    [
        (_meshagent("direct"), SETTINGS),
        (_meshagent(), None),
        (_meshagent(serviceAccountName=None), SETTINGS),
        (_meshagent(workload={"spec": {"containers": [{"name": "a", "image": "a:1"}]}}), SETTINGS),
    ],
)
def test_no_injected_sidecar_objects_for_agents_whose_pods_get_no_sidecar(
    meshagent: dict[str, Any], settings: SidecarSettings | None
) -> None:
    if meshagent["spec"].get("serviceAccountName") is None:
        del meshagent["spec"]["serviceAccountName"]
    assert injected_tailnet_objects(meshagent, default_network="direct", tailscale=settings) is None


def test_the_registered_injection_webhook_skips_system_namespaces_and_times_out_short() -> None:
    config = OperatorConfig(webhook_configuration="x.agentmesh.io", operator_namespace="mesh")
    _, (webhook,) = webhooks(config, {"url": "https://127.0.0.1:9443", "caBundle": "Y2E="})
    assert webhook["name"] == f"{INJECT_ID}.x.agentmesh.io"
    assert webhook["clientConfig"] == {
        "url": f"https://127.0.0.1:9443/{INJECT_ID}",
        "caBundle": "Y2E=",
    }
    assert webhook["namespaceSelector"]["matchExpressions"] == [
        {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["kube-system", "kube-public", "kube-node-lease", "mesh"],
        }
    ]
    assert webhook["objectSelector"] == {
        "matchExpressions": [
            {"key": "agentmesh.io/agent", "operator": "Exists"},
            {"key": "app.kubernetes.io/managed-by", "operator": "NotIn", "values": ["agent-mesh"]},
        ]
    }
    assert webhook["timeoutSeconds"] <= 5
    assert (webhook["failurePolicy"], webhook["reinvocationPolicy"]) == ("Fail", "Never")


@pytest.mark.parametrize(
    ("patterns", "namespace", "watched"),
    [
        ([], "anything", True),
        (["team-*"], "team-a", True),
        (["team-*"], "other", False),
        (["team-*, !team-x"], "team-x", False),
        (["!kube-*"], "team-a", True),
        (["!kube-*"], "kube-system", False),
        (["a", "b*"], "bee", True),
    ],
)
def test_the_webhook_answers_for_the_namespaces_the_operator_watches_as_kopf_reads_them(
    patterns: list[str], namespace: str, watched: bool
) -> None:
    assert OperatorConfig(namespaces=patterns).watches(namespace) is watched


def test_the_injection_handler_is_registered_for_labelled_pods_on_create() -> None:
    from agent_mesh.controllers import admission

    registry = kopf.OperatorRegistry()
    real = kopf.on.mutate
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kopf.on, "mutate", lambda *a, **k: real(*a, registry=registry, **k))
        patch.setattr(kopf.on, "validate", lambda *a, **k: lambda fn: fn)
        admission.register()
    (handler,) = registry._webhooks.get_all_handlers()
    assert handler.id == INJECT_ID
    assert list(handler.operations or []) == ["CREATE"]
    assert handler.labels == {"agentmesh.io/agent": kopf.PRESENT}
