"""The tailscale sidecar injected by the operator's mutating webhook into pods you run
yourself, against the real apiserver (pods are admitted, never scheduled: no node): a pod
labelled agentmesh.io/agent=<tailscale MeshAgent> comes back with exactly one sidecar, the
managed agents' one, field by field; an update or a re-creation with the sidecar adds no
second one; unlabelled pods, pods of a direct or missing agent and pods in excluded
namespaces are left as sent (with a warning saying why where the webhook was called); a
pod running as another ServiceAccount is refused; the registered configuration is the
documented one."""

from __future__ import annotations

import base64
import contextlib
import copy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from agent_mesh.testing import OperatorProcess
from tests.support.cluster import Cluster
from tests.support.mesh_api import apply_agent
from tests.support.namespaces import family, fresh_namespace
from tests.support.operators import own_operator
from tests.support.waiting import wait_for
from tests.support.webhooks import own_webhook_configuration

pytestmark = pytest.mark.tailscale

FAMILY = family("ami")
SYSTEM = f"{FAMILY}system"  # the operator's own namespace: watched (the family), excluded
IMAGE = "localhost/tailscale:v1.86.5"
TAILNET = {
    "AGENT_MESH_TAILSCALE_TAILNET_DOMAIN": "tailnet.test",
    "AGENT_MESH_TAILSCALE_LOGIN_SERVER": "http://10.244.0.1:8080",
    "AGENT_MESH_TAILSCALE_IMAGE": IMAGE,
}
ACCOUNT = "worker-sa"


@dataclass
class Injecting:
    operator: OperatorProcess
    namespace: str
    configuration: str


@pytest.fixture(scope="module")
def injecting(
    cluster: Cluster, crds: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Injecting]:
    log: Path = tmp_path_factory.mktemp("inject") / "operator.log"
    with (
        own_webhook_configuration(cluster, "ami") as configuration,
        fresh_namespace(cluster, FAMILY) as namespace,
        own_operator(
            cluster,
            log,
            FAMILY,
            webhooks=True,
            extra_env={**TAILNET, "AGENT_MESH_WEBHOOK_CONFIGURATION": configuration},
        ) as operator,
    ):
        _auth_key(cluster)
        for where in (namespace, SYSTEM):
            _service_account(cluster, where, ACCOUNT)
            _meshagent(cluster, where, "worker", network="tailscale")
        wait_for(
            "the webhook to inject (the apiserver has its configuration)",
            lambda: _injects(cluster, namespace),
        )
        yield Injecting(operator, namespace, configuration)


def _auth_key(cluster: Cluster) -> None:
    with contextlib.suppress(client.ApiException):  # there from an earlier module run
        client.CoreV1Api(cluster.api).create_namespaced_secret(
            SYSTEM,
            {"metadata": {"name": "agent-mesh-tailscale-auth"}, "stringData": {"authkey": "k"}},
        )


def _service_account(cluster: Cluster, namespace: str, name: str) -> None:
    with contextlib.suppress(client.ApiException):
        client.CoreV1Api(cluster.api).create_namespaced_service_account(
            namespace, {"metadata": {"name": name}}
        )


def _meshagent(cluster: Cluster, namespace: str, name: str, *, network: str) -> None:
    with contextlib.suppress(client.ApiException):  # the system namespace's, from a rerun
        apply_agent(
            cluster,
            namespace,
            name,
            "worker",
            network=network,
            serviceAccountName=ACCOUNT,
            port=8081,
        )


def _pod(name: str, agent: str | None = "worker", account: str = ACCOUNT) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"agentmesh.io/agent": agent} if agent else {"app": "mine"},
        },
        "spec": {
            "serviceAccountName": account,
            "automountServiceAccountToken": False,
            "containers": [{"name": "agent", "image": "localhost/agent-mesh:test"}],
        },
    }


def _create(
    cluster: Cluster, namespace: str, pod: dict[str, Any], **options: Any
) -> tuple[dict[str, Any], list[str]]:
    """The pod as the apiserver stored it, and the warnings of the admission."""
    core = client.CoreV1Api(cluster.api)
    created, _, headers = core.create_namespaced_pod_with_http_info(namespace, pod, **options)
    warnings = [value for key, value in (headers or {}).items() if key.lower() == "warning"]
    return cluster.api.sanitize_for_serialization(created), warnings


def _dry_run(cluster: Cluster, namespace: str) -> dict[str, Any]:
    pod = _pod(f"probe-{uuid.uuid4().hex[:6]}")
    return _create(cluster, namespace, pod, dry_run="All")[0]


def _injects(cluster: Cluster, namespace: str) -> bool:
    """Whether a dry-run pod comes back with the sidecar (False while the apiserver has no
    configuration yet, or cannot call the webhook yet)."""
    try:
        return _sidecars(_dry_run(cluster, namespace)) == 1
    except client.ApiException:
        return False


def _sidecars(pod: dict[str, Any]) -> int:
    return [c["name"] for c in pod["spec"]["containers"]].count("tailscale")


def test_a_labelled_pod_gets_exactly_one_sidecar_field_by_field(
    cluster: Cluster, injecting: Injecting
) -> None:
    ns = injecting.namespace
    pod, warnings = _create(cluster, ns, _pod("mine"))
    assert warnings == []
    containers = pod["spec"]["containers"]
    assert [c["name"] for c in containers] == ["agent", "tailscale"]
    sidecar = containers[1]
    assert sidecar["image"] == IMAGE
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["TS_USERSPACE"]["value"] == "true"
    assert env["TS_KUBE_SECRET"]["value"] == "worker-tailscale"
    assert env["TS_HOSTNAME"]["value"] == f"agent-mesh-{ns}-worker"
    assert env["TS_AUTHKEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "worker-tailscale-auth",
        "key": "authkey",
    }
    assert env["TS_EXTRA_ARGS"]["value"] == "--login-server=http://10.244.0.1:8080"
    assert env["TS_PANIC_IF_HIT_MAIN_CONTROL"]["value"] == "1"
    assert env["TS_SERVE_CONFIG"]["value"] == "/etc/agent-mesh/tailscale/serve.json"
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert not security.get("privileged")
    assert "add" not in security["capabilities"]  # no NET_ADMIN: userspace networking
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["tailscale-tmp"]["emptyDir"] == {}
    assert volumes["tailscale-serve"]["configMap"]["name"] == "worker-tailscale-serve"
    # the sidecar's own ServiceAccount credentials: it reads and writes its state Secret
    # even in a pod that mounts no token for its other containers
    sources = volumes["tailscale-kube-api"]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert {m["name"] for m in sidecar["volumeMounts"]} == {
        "tailscale-tmp",
        "tailscale-serve",
        "tailscale-kube-api",
    }
    assert containers[0] == {**containers[0], "name": "agent", "image": "localhost/agent-mesh:test"}
    assert pod["spec"]["serviceAccountName"] == ACCOUNT  # never changed behind your back


def test_the_sidecars_objects_are_the_operators_and_bound_to_the_agents_account_only(
    cluster: Cluster, injecting: Injecting
) -> None:
    ns = injecting.namespace
    rbac, core = client.RbacAuthorizationV1Api(cluster.api), client.CoreV1Api(cluster.api)

    def binding() -> Any:
        try:
            return rbac.read_namespaced_role_binding("worker-tailscale", ns)
        except client.ApiException:
            return None

    found = wait_for("the sidecar's RoleBinding", binding)
    assert [(s.kind, s.name) for s in found.subjects] == [("ServiceAccount", ACCOUNT)]
    role = rbac.read_namespaced_role("worker-tailscale", ns)
    assert role.rules[0].resource_names == ["worker-tailscale"]
    assert sorted(role.rules[0].verbs) == ["get", "patch", "update"]
    wait_for(
        "the state Secret, the auth key copy and the serve ConfigMap",
        lambda: (
            core.read_namespaced_secret("worker-tailscale", ns)
            and core.read_namespaced_secret("worker-tailscale-auth", ns)
            and core.read_namespaced_config_map("worker-tailscale-serve", ns)
        ),
    )


def test_a_rotated_auth_key_reaches_the_injected_agents_copy(
    cluster: Cluster, injecting: Injecting
) -> None:
    core = client.CoreV1Api(cluster.api)
    wait_for(
        "the agent's copy of the auth key",
        lambda: _copied_key(core, injecting.namespace) == b"k",
    )
    core.patch_namespaced_secret(
        "agent-mesh-tailscale-auth", SYSTEM, {"stringData": {"authkey": "rotated"}}
    )
    # the operator's 30 s pass over the tailscale agents, injected ones included
    wait_for(
        "the copy to follow its source",
        lambda: _copied_key(core, injecting.namespace) == b"rotated",
        timeout=75,
    )


def _copied_key(core: client.CoreV1Api, namespace: str) -> bytes | None:
    try:
        copy = core.read_namespaced_secret("worker-tailscale-auth", namespace)
    except client.ApiException:
        return None
    return base64.b64decode((copy.data or {}).get("authkey") or "")


def test_an_update_or_a_re_creation_adds_no_second_sidecar(
    cluster: Cluster, injecting: Injecting
) -> None:
    ns = injecting.namespace
    core = client.CoreV1Api(cluster.api)
    first, _ = _create(cluster, ns, _pod("twice"))
    assert _sidecars(first) == 1
    updated = core.patch_namespaced_pod("twice", ns, {"metadata": {"labels": {"edited": "yes"}}})
    assert [c.name for c in updated.spec.containers].count("tailscale") == 1
    again = copy.deepcopy(first)
    again["metadata"] = {"name": "twice-again", "labels": first["metadata"]["labels"]}
    again.pop("status", None)
    recreated, warnings = _create(cluster, ns, again)
    assert _sidecars(recreated) == 1
    assert [c["name"] for c in recreated["spec"]["containers"]] == ["agent", "tailscale"]
    assert warnings == []


def test_an_unlabelled_pod_is_untouched(cluster: Cluster, injecting: Injecting) -> None:
    pod, warnings = _create(cluster, injecting.namespace, _pod("plain", agent=None))
    assert [c["name"] for c in pod["spec"]["containers"]] == ["agent"]
    assert not [v for v in pod["spec"].get("volumes") or [] if v["name"].startswith("tailscale")]
    assert warnings == []


def test_a_managed_agents_pod_never_goes_through_the_webhook(
    cluster: Cluster, injecting: Injecting
) -> None:
    # labelled as the operator's StatefulSets label their pods: the objectSelector leaves
    # it out, so a managed agent's pod never waits on the operator (it has its sidecar)
    pod = _pod("managed-0")
    pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "agent-mesh"
    created, warnings = _create(cluster, injecting.namespace, pod)
    assert [c["name"] for c in created["spec"]["containers"]] == ["agent"]
    assert warnings == []


def test_a_pod_in_an_excluded_namespace_is_untouched(
    cluster: Cluster, injecting: Injecting
) -> None:
    # the operator watches its own namespace (its family) and the agent there is a
    # tailscale one: the configuration's namespaceSelector keeps the apiserver from
    # calling the webhook (and the handler would skip it too)
    pod, warnings = _create(cluster, SYSTEM, _pod(f"system-{uuid.uuid4().hex[:6]}"))
    assert [c["name"] for c in pod["spec"]["containers"]] == ["agent"]
    assert warnings == []


def test_a_pod_of_a_direct_or_missing_agent_is_unchanged_and_told_why(
    cluster: Cluster, injecting: Injecting
) -> None:
    ns = injecting.namespace
    _meshagent(cluster, ns, "plain", network="direct")
    direct, warned = _create(cluster, ns, _pod("of-direct", agent="plain"))
    assert [c["name"] for c in direct["spec"]["containers"]] == ["agent"]
    assert any("has network direct: no tailscale sidecar" in w for w in warned), warned
    missing, warned = _create(cluster, ns, _pod("of-nobody", agent="nobody"))
    assert [c["name"] for c in missing["spec"]["containers"]] == ["agent"]
    assert any(f"MeshAgent {ns}/nobody does not exist" in w for w in warned), warned


def test_a_pod_running_as_another_service_account_is_refused_with_the_reason(
    cluster: Cluster, injecting: Injecting
) -> None:
    ns = injecting.namespace
    _service_account(cluster, ns, "other")
    with pytest.raises(client.ApiException) as refused:
        _create(cluster, ns, _pod("other-account", account="other"))
    assert refused.value.status in (400, 422), refused.value.body
    assert "spec.serviceAccountName: the pod runs as 'other'" in str(refused.value.body)


def test_the_registered_configuration_is_the_documented_one(
    cluster: Cluster, injecting: Injecting
) -> None:
    found = client.AdmissionregistrationV1Api(cluster.api).read_mutating_webhook_configuration(
        injecting.configuration
    )
    (webhook,) = found.webhooks
    assert webhook.name == f"inject-tailscale.{injecting.configuration}"
    assert webhook.client_config.url.endswith("/inject-tailscale")
    assert webhook.client_config.ca_bundle
    assert [(r.api_groups, r.resources, r.operations) for r in webhook.rules] == [
        ([""], ["pods"], ["CREATE"])
    ]
    assert [(e.key, e.operator, e.values) for e in webhook.object_selector.match_expressions] == [
        ("agentmesh.io/agent", "Exists", None),
        ("app.kubernetes.io/managed-by", "NotIn", ["agent-mesh"]),
    ]
    (expression,) = webhook.namespace_selector.match_expressions
    assert (expression.key, expression.operator) == ("kubernetes.io/metadata.name", "NotIn")
    assert expression.values == ["kube-system", "kube-public", "kube-node-lease", SYSTEM]
    assert webhook.timeout_seconds == 5
    assert webhook.failure_policy == "Fail"
    assert webhook.reinvocation_policy == "Never"
    assert webhook.side_effects == "None"
