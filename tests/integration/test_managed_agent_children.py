"""The operator runs managed agents' children on the real apiserver: a MeshAgent with
spec.workload and network tailscale gets its StatefulSet, headless Service, ServiceAccount,
the sidecar's state Secret, serve ConfigMap, Role and RoleBinding, each owned by it; a
deleted child comes back; a spec change reaches the children; and TailnetConnected says
plainly that the agent is not on the tailnet yet (control plane only: no pod runs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.testing import OperatorProcess
from tests.support.cluster import Cluster
from tests.support.namespaces import family, fresh_namespace
from tests.support.operators import own_operator
from tests.support.tasks import wait_agent_condition
from tests.support.waiting import wait_for

pytestmark = pytest.mark.tailscale

CHILDREN_FAMILY = family("amm")  # apart from the session operator's, which would act too
TAILNET = {
    "AGENT_MESH_TAILSCALE_TAILNET_DOMAIN": "tailnet.test",
    "AGENT_MESH_TAILSCALE_LOGIN_SERVER": "http://10.244.0.1:8080",
    "AGENT_MESH_TAILSCALE_IMAGE": "localhost/tailscale:v1.86.5",
}
POD = {
    "containers": [{"name": "agent", "image": "localhost/agent-mesh:test"}],
    "nodeSelector": {"kind": "agents"},
}


@dataclass
class Operated:
    operator: OperatorProcess
    namespace: str


@pytest.fixture(scope="module")
def operated(
    cluster: Cluster, crds: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operated]:
    log = tmp_path_factory.mktemp("children") / "operator.log"
    with (
        fresh_namespace(cluster, CHILDREN_FAMILY) as namespace,
        own_operator(cluster, log, CHILDREN_FAMILY, extra_env=TAILNET) as own,
    ):
        yield Operated(own, namespace)


def _create(cluster: Cluster, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MeshAgent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"agentType": "worker", **spec},
    }
    created: dict[str, Any] = cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshagents", body
    )
    return created


def _patch_spec(cluster: Cluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshagents", name, {"spec": spec}
    )


def _read(read: Any, *args: str) -> Any:
    try:
        return read(*args)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def _children(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    core, apps = client.CoreV1Api(cluster.api), client.AppsV1Api(cluster.api)
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    reads = {
        "statefulset": (apps.read_namespaced_stateful_set, name),
        "service": (core.read_namespaced_service, name),
        "serviceaccount": (core.read_namespaced_service_account, name),
        "secret": (core.read_namespaced_secret, f"{name}-tailscale"),
        "configmap": (core.read_namespaced_config_map, f"{name}-tailscale-serve"),
        "role": (rbac.read_namespaced_role, f"{name}-tailscale"),
        "rolebinding": (rbac.read_namespaced_role_binding, f"{name}-tailscale"),
    }
    return {kind: _read(read, child, namespace) for kind, (read, child) in reads.items()}


def test_managed_tailscale_agent_gets_every_child_owned_by_it_field_by_field(
    cluster: Cluster, operated: Operated
) -> None:
    ns = operated.namespace
    agent = _create(cluster, ns, "summ", network="tailscale", port=8081, workload={"spec": POD})
    uid = agent["metadata"]["uid"]
    kids = wait_for(
        "every child of the managed agent",
        lambda: (found := _children(cluster, ns, "summ")) and all(found.values()) and found,
        timeout=30,
    )
    for kind, child in kids.items():
        owners = child.metadata.owner_references
        assert [(o.kind, o.name, o.uid, o.controller) for o in owners] == [
            ("MeshAgent", "summ", uid, True)
        ], kind
    sts = kids["statefulset"]
    assert (sts.spec.replicas, sts.spec.service_name) == (1, "summ")
    pod = sts.spec.template.spec
    assert pod.service_account_name == "summ"
    assert pod.node_selector == {"kind": "agents"}
    assert pod.security_context.run_as_non_root is True
    assert pod.security_context.seccomp_profile.type == "RuntimeDefault"
    assert [c.name for c in pod.containers] == ["agent", "tailscale"]
    sidecar = pod.containers[1]
    assert sidecar.image == "localhost/tailscale:v1.86.5"
    env = {e.name: e.value for e in sidecar.env}
    assert env["TS_HOSTNAME"] == f"agent-mesh-{ns}-summ"
    assert env["TS_KUBE_SECRET"] == "summ-tailscale"
    assert env["TS_EXTRA_ARGS"] == "--login-server=http://10.244.0.1:8080"
    assert env["TS_PANIC_IF_HIT_MAIN_CONTROL"] == "1"
    assert sidecar.security_context.allow_privilege_escalation is False
    assert sidecar.security_context.capabilities.drop == ["ALL"]
    svc = kids["service"]
    assert svc.spec.cluster_ip == "None"
    assert [(p.name, p.port, p.target_port) for p in svc.spec.ports] == [("mesh", 8081, 8081)]
    assert svc.spec.selector == {
        "agentmesh.io/agent": "summ",
        "app.kubernetes.io/managed-by": "agent-mesh",
    }
    rules = kids["role"].rules
    assert [(r.resources, r.resource_names, r.verbs) for r in rules] == [
        (["secrets"], ["summ-tailscale"], ["get", "update", "patch"]),
        (["events"], None, ["get", "create", "patch"]),
    ]
    binding = kids["rolebinding"]
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [
        ("ServiceAccount", "summ", ns)
    ]
    assert (binding.role_ref.kind, binding.role_ref.name) == ("Role", "summ-tailscale")
    assert not kids["secret"].data  # the sidecar's to fill
    served = json.loads(kids["configmap"].data["serve.json"])
    assert list(served["Web"]) == [f"agent-mesh-{ns}-summ.tailnet.test:8081"]

    connected = wait_agent_condition(cluster, ns, "summ", "TailnetConnected")
    assert (connected["status"], connected["reason"]) == ("False", "SidecarNotReady")
    assert "does not read its device into status.tailscale yet" in connected["message"]


def test_deleted_children_come_back(cluster: Cluster, operated: Operated) -> None:
    ns = operated.namespace
    _create(cluster, ns, "phoenix", network="tailscale", workload={"spec": POD})
    apps, rbac = client.AppsV1Api(cluster.api), client.RbacAuthorizationV1Api(cluster.api)
    first = wait_for(
        "the StatefulSet", lambda: _read(apps.read_namespaced_stateful_set, "phoenix", ns)
    )
    role = wait_for("the Role", lambda: _read(rbac.read_namespaced_role, "phoenix-tailscale", ns))
    apps.delete_namespaced_stateful_set("phoenix", ns)
    rbac.delete_namespaced_role("phoenix-tailscale", ns)

    def recreated(read: Any, name: str, old_uid: str) -> bool:
        found = _read(read, name, ns)
        return found is not None and found.metadata.uid != old_uid

    wait_for(
        "the StatefulSet to come back",
        lambda: recreated(apps.read_namespaced_stateful_set, "phoenix", first.metadata.uid),
        timeout=30,
    )
    wait_for(
        "the Role to come back",
        lambda: recreated(rbac.read_namespaced_role, "phoenix-tailscale", role.metadata.uid),
        timeout=30,
    )


def test_spec_change_reaches_the_children(cluster: Cluster, operated: Operated) -> None:
    ns = operated.namespace
    _create(cluster, ns, "mover", network="tailscale", workload={"spec": POD})
    core = client.CoreV1Api(cluster.api)
    wait_for("the Service", lambda: _read(core.read_namespaced_service, "mover", ns))
    _patch_spec(cluster, ns, "mover", {"port": 9090})

    def port() -> int | None:
        svc = _read(core.read_namespaced_service, "mover", ns)
        return svc.spec.ports[0].port if svc else None

    wait_for("the Service on the new port", lambda: port() == 9090, timeout=30)
    served = json.loads(
        core.read_namespaced_config_map("mover-tailscale-serve", ns).data["serve.json"]
    )
    assert list(served["TCP"]) == ["9090"]


def test_agent_leaving_the_tailnet_loses_its_sidecar_rbac_and_says_so(
    cluster: Cluster, operated: Operated
) -> None:
    ns = operated.namespace
    _create(cluster, ns, "leaver", network="tailscale", workload={"spec": POD})
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    wait_for("the Role", lambda: _read(rbac.read_namespaced_role, "leaver-tailscale", ns))
    _patch_spec(cluster, ns, "leaver", {"network": "direct"})
    wait_for(
        "the Role and RoleBinding to go",
        lambda: (
            _read(rbac.read_namespaced_role, "leaver-tailscale", ns) is None
            and _read(rbac.read_namespaced_role_binding, "leaver-tailscale", ns) is None
        ),
        timeout=30,
    )
    apps = client.AppsV1Api(cluster.api)
    pod = apps.read_namespaced_stateful_set("leaver", ns).spec.template.spec
    assert [c.name for c in pod.containers] == ["agent"]
    condition = wait_agent_condition(
        cluster, ns, "leaver", "TailnetConnected", reason="TailnetNotUsed"
    )
    assert condition["status"] == "False"


def test_tailscale_agent_the_operator_does_not_run_is_not_silently_on_the_tailnet(
    cluster: Cluster, operated: Operated
) -> None:
    ns = operated.namespace
    _create(cluster, ns, "outsider", network="tailscale")
    condition = wait_agent_condition(cluster, ns, "outsider", "TailnetConnected")
    assert (condition["status"], condition["reason"]) == ("False", "SidecarNotInjected")


def test_workload_the_builders_refuse_is_reported_in_the_condition_and_an_event(
    cluster: Cluster, operated: Operated
) -> None:
    ns = operated.namespace
    clash = {"containers": [{"name": "tailscale", "image": "x:1"}]}
    _create(cluster, ns, "clash", network="tailscale", workload={"spec": clash})
    condition = wait_agent_condition(
        cluster, ns, "clash", "TailnetConnected", reason="WorkloadRefused"
    )
    assert "a container is named tailscale" in condition["message"]
    core = client.CoreV1Api(cluster.api)
    wait_for(
        "the WorkloadRefused Event",
        lambda: any(
            e.reason == "WorkloadRefused"
            for e in core.list_namespaced_event(
                ns, field_selector="involvedObject.name=clash"
            ).items
        ),
    )
    assert _read(client.AppsV1Api(cluster.api).read_namespaced_stateful_set, "clash", ns) is None
