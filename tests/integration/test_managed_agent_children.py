"""The operator runs managed agents' children on the real apiserver: a MeshAgent with
spec.workload and network tailscale gets its StatefulSet, headless Service, ServiceAccount,
the sidecar's state Secret, serve ConfigMap, Role and RoleBinding, each owned by it; a
deleted child comes back; a spec change reaches the children; and TailnetConnected says
what the operator reads of the sidecar: its device from the state Secret, its health from
the pod's container status (control plane only: the test writes both, as containerboot
and the kubelet would)."""

from __future__ import annotations

import base64
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
from tests.support.tailnet import report_containers
from tests.support.waiting import wait_for

pytestmark = pytest.mark.tailscale

CHILDREN_FAMILY = family("amm")  # apart from the session operator's, which would act too
TAILNET = {
    "AGENT_MESH_TAILSCALE_TAILNET_DOMAIN": "tailnet.test",
    "AGENT_MESH_TAILSCALE_LOGIN_SERVER": "http://10.244.0.1:8080",
    "AGENT_MESH_TAILSCALE_IMAGE": "localhost/tailscale:v1.86.5",
    # endpoints become MagicDNS URLs only for an operator that can dial them (no call is
    # made here: no agent runs)
    "AGENT_MESH_TAILNET_PROXY": "http://127.0.0.1:9",
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
        _auth_key(cluster, "first-key")
        yield Operated(own, namespace)


def _auth_key(cluster: Cluster, key: str) -> None:
    """The auth key's source Secret in the operator's namespace (created or replaced)."""
    body = {
        "metadata": {"name": "agent-mesh-tailscale-auth"},
        "stringData": {"authkey": key},
    }
    core = client.CoreV1Api(cluster.api)
    try:
        core.create_namespaced_secret(f"{CHILDREN_FAMILY}system", body)
    except client.ApiException as error:
        if error.status != 409:
            raise
        core.replace_namespaced_secret(
            "agent-mesh-tailscale-auth", f"{CHILDREN_FAMILY}system", body
        )


def _refused(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The TailnetConnected condition once it says the workload was refused."""
    found: dict[str, Any] = wait_for(
        f"{name}'s TailnetConnected to say WorkloadRefused",
        lambda: (
            (c := _condition(cluster, namespace, name, "TailnetConnected"))
            and c["reason"] == "WorkloadRefused"
            and c
        ),
    )
    return found


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


def _condition(cluster: Cluster, namespace: str, name: str, type_: str) -> dict[str, Any] | None:
    agent = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshagents", name
    )
    for item in (agent.get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return None


def _children(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    core, apps = client.CoreV1Api(cluster.api), client.AppsV1Api(cluster.api)
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    reads = {
        "statefulset": (apps.read_namespaced_stateful_set, name),
        "service": (core.read_namespaced_service, name),
        "serviceaccount": (core.read_namespaced_service_account, name),
        "secret": (core.read_namespaced_secret, f"{name}-tailscale"),
        "authsecret": (core.read_namespaced_secret, f"{name}-tailscale-auth"),
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

    connected = wait_for(
        "TailnetConnected", lambda: _condition(cluster, ns, "summ", "TailnetConnected")
    )
    assert (connected["status"], connected["reason"]) == ("False", "AgentPodMissing")
    assert "through its Service" in connected["message"]


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
    condition = wait_for(
        "TailnetNotUsed",
        lambda: (
            (c := _condition(cluster, ns, "leaver", "TailnetConnected"))
            and c["reason"] == "TailnetNotUsed"
            and c
        ),
    )
    assert condition["status"] == "False"


def test_tailscale_agent_the_operator_does_not_run_is_not_silently_on_the_tailnet(
    cluster: Cluster, operated: Operated
) -> None:
    ns = operated.namespace
    _create(cluster, ns, "outsider", network="tailscale")
    condition = wait_for(
        "TailnetConnected", lambda: _condition(cluster, ns, "outsider", "TailnetConnected")
    )
    assert (condition["status"], condition["reason"]) == ("False", "SidecarNotInjected")


def test_workload_the_builders_refuse_is_reported_in_the_condition_and_an_event(
    cluster: Cluster, operated: Operated
) -> None:
    ns = operated.namespace
    clash = {"containers": [{"name": "tailscale", "image": "x:1"}]}
    _create(cluster, ns, "clash", network="tailscale", workload={"spec": clash})
    condition = _refused(cluster, ns, "clash")
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


def _agent(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshagents", name
    )
    return found


def test_device_and_sidecar_health_reach_status_endpoint_and_wide_output(
    cluster: Cluster, operated: Operated
) -> None:
    ns = operated.namespace
    _create(cluster, ns, "ident", network="tailscale", port=8081, workload={"spec": POD})
    core = client.CoreV1Api(cluster.api)
    wait_for("the state Secret", lambda: _read(core.read_namespaced_secret, "ident-tailscale", ns))
    fqdn = f"agent-mesh-{ns}-ident.tailnet.test"
    ips = ["100.64.0.9", "fd7a:115c:a1e0::9"]
    # what containerboot writes once the device is up (with the trailing dot)
    device = {"device_id": "nodeid-9", "device_fqdn": f"{fqdn}.", "device_ips": json.dumps(ips)}
    core.patch_namespaced_secret(
        "ident-tailscale",
        ns,
        {"data": {k: base64.b64encode(v.encode()).decode() for k, v in device.items()}},
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "ident-0",
            "labels": {"agentmesh.io/agent": "ident", "app.kubernetes.io/managed-by": "agent-mesh"},
        },
        "spec": {
            "serviceAccountName": "ident",
            "automountServiceAccountToken": False,
            "nodeSelector": {"kind": "agents"},
            "containers": [
                {"name": "agent", "image": "a:1"},
                {"name": "tailscale", "image": "t:1"},
            ],
        },
    }
    wait_for("the ServiceAccount", lambda: _read(core.read_namespaced_service_account, "ident", ns))
    core.create_namespaced_pod(ns, pod)
    report_containers(core, ns, "ident-0", ready=True, state={"running": {}})

    def connected(status: str, reason: str) -> dict[str, Any] | None:
        c = _condition(cluster, ns, "ident", "TailnetConnected")
        return c if c and (c["status"], c["reason"]) == (status, reason) else None

    up = wait_for("TailnetConnected=True", lambda: connected("True", "TailnetDeviceReady"))
    assert fqdn in up["message"]
    status = _agent(cluster, ns, "ident")["status"]
    assert status["tailscale"] == {
        "hostname": f"agent-mesh-{ns}-ident",
        "dnsName": fqdn,
        "ips": ips,
        "deviceId": "nodeid-9",
    }
    assert status["endpoint"] == f"http://{fqdn}:8081"
    wide = cluster.kubectl("get", "meshagents", "ident", "-n", ns, "-o", "wide").stdout
    header, row = wide.splitlines()
    assert "ENDPOINT" in header and "TAILNET" in header
    assert f"http://{fqdn}:8081" in row.split() and fqdn in row.split()

    # the serve configuration gained the IP-keyed entries
    def served() -> dict[str, Any]:
        config = core.read_namespaced_config_map("ident-tailscale-serve", ns)
        web: dict[str, Any] = json.loads(config.data["serve.json"])["Web"]
        return web

    wait_for("the serve entries by tailnet IP", lambda: "100.64.0.9.tailnet.test:8081" in served())

    # the sidecar dies: the Secret keeps its device, the verdict does not
    report_containers(
        core, ns, "ident-0", ready=False, state={"terminated": {"reason": "Error", "exitCode": 1}}
    )
    down = wait_for("TailnetConnected=False", lambda: connected("False", "SidecarNotRunning"))
    assert "exit code 1" in down["message"]
    status = _agent(cluster, ns, "ident")["status"]
    assert status["endpoint"] == f"http://ident.{ns}.svc:8081"
    assert status["tailscale"]["dnsName"] == fqdn

    report_containers(core, ns, "ident-0", ready=True, state={"running": {}})
    wait_for("TailnetConnected=True again", lambda: connected("True", "TailnetDeviceReady"))
    assert _agent(cluster, ns, "ident")["status"]["endpoint"] == f"http://{fqdn}:8081"


def test_a_device_up_before_its_agent_registers_gets_serve_entries_by_tailnet_ip(
    cluster: Cluster, operated: Operated
) -> None:
    """The device is in the state Secret by the time registration reads it (a sidecar
    quicker than the operator, or IPs changed while the operator was down): the status
    and the serve configuration both follow it, not just the status."""
    ns = operated.namespace
    core = client.CoreV1Api(cluster.api)
    fqdn = f"agent-mesh-{ns}-early.tailnet.test"
    device = {
        "device_id": "nodeid-7",
        "device_fqdn": f"{fqdn}.",
        "device_ips": json.dumps(["100.64.0.7"]),
    }
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": "early-tailscale"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in device.items()},
        },
    )
    _create(cluster, ns, "early", network="tailscale", port=8081, workload={"spec": POD})
    wait_for(
        "status.tailscale from the device",
        lambda: (_agent(cluster, ns, "early").get("status") or {}).get("tailscale"),
    )

    def served() -> dict[str, Any]:
        config = core.read_namespaced_config_map("early-tailscale-serve", ns)
        web: dict[str, Any] = json.loads(config.data["serve.json"])["Web"]
        return web

    wait_for("the serve entry by tailnet IP", lambda: "100.64.0.7.tailnet.test:8081" in served())


def test_auth_key_is_copied_into_the_agent_namespace_and_follows_its_source(
    cluster: Cluster, operated: Operated
) -> None:
    ns = operated.namespace
    _create(cluster, ns, "keyed", network="tailscale", workload={"spec": POD})
    core = client.CoreV1Api(cluster.api)

    def copied() -> str | None:
        found = _read(core.read_namespaced_secret, "keyed-tailscale-auth", ns)
        data = (found.data if found else None) or {}
        return base64.b64decode(data["authkey"]).decode() if "authkey" in data else None

    assert wait_for("the copy", copied) == "first-key"
    apps = client.AppsV1Api(cluster.api)
    # the children are applied one by one: the copy comes before the StatefulSet
    sts = wait_for("the StatefulSet", lambda: _read(apps.read_namespaced_stateful_set, "keyed", ns))
    env = {e.name: e.value_from for e in sts.spec.template.spec.containers[1].env}
    assert env["TS_AUTHKEY"].secret_key_ref.name == "keyed-tailscale-auth"
    try:
        _auth_key(cluster, "rotated-key")
        # the periodic refresh (30 s) brings the copy up to the source
        wait_for("the rotated key", lambda: copied() == "rotated-key", timeout=75)
    finally:
        _auth_key(cluster, "first-key")


def test_missing_auth_key_refuses_the_workload_with_the_reason(
    cluster: Cluster, operated: Operated, tmp_path_factory: pytest.TempPathFactory
) -> None:
    nokey = family("amn")
    log = tmp_path_factory.mktemp("nokey") / "operator.log"
    with (
        fresh_namespace(cluster, nokey) as ns,
        own_operator(cluster, log, nokey, extra_env=TAILNET),
    ):
        _create(cluster, ns, "keyless", network="tailscale", workload={"spec": POD})
        condition = _refused(cluster, ns, "keyless")
        assert f"{nokey}system/agent-mesh-tailscale-auth" in condition["message"]
        assert "does not exist" in condition["message"]
        apps = client.AppsV1Api(cluster.api)
        assert _read(apps.read_namespaced_stateful_set, "keyless", ns) is None


def test_a_spec_changed_while_the_agent_is_being_created_is_still_handled(
    cluster: Cluster, operated: Operated
) -> None:
    """kopf folds a spec change that arrives while creation handlers run into the creation
    (its record of the handled spec is written from the newest body): the operator still
    brings the children and status to the new spec (observedGeneration says which)."""
    ns = operated.namespace
    _create(cluster, ns, "hasty", network="tailscale", workload={"spec": POD})
    _patch_spec(cluster, ns, "hasty", {"network": "direct"})  # at once, mid-creation
    apps = client.AppsV1Api(cluster.api)
    rbac = client.RbacAuthorizationV1Api(cluster.api)

    def on_the_new_spec() -> bool:
        body = cluster.read_meshagent(ns, "hasty") or {}
        sts = _read(apps.read_namespaced_stateful_set, "hasty", ns)
        return bool(
            (body.get("status") or {}).get("observedGeneration") == body["metadata"]["generation"]
            and sts is not None
            and [c.name for c in sts.spec.template.spec.containers] == ["agent"]
            and _read(rbac.read_namespaced_role, "hasty-tailscale", ns) is None
        )

    wait_for("the children and status on the new spec", on_the_new_spec, timeout=45)
