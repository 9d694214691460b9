"""An injected agent's tailnet identity in its status, against the real apiserver: its pod
is the one labelled agentmesh.io/agent=<name>, created through the apiserver so that the
operator's webhook injects the sidecar; the test writes what the kubelet (the pod's
container status) and containerboot (the state Secret) would, with no node. The agent's
status.tailscale, endpoint and TailnetConnected follow: AgentPodMissing without a pod,
SidecarNotInjected for a pod admitted without the sidecar, the sidecar's own health
otherwise, and the newest pod judged (and named) when there are two."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from tests.support.cluster import Cluster
from tests.support.mesh_api import apply_agent
from tests.support.namespaces import family, fresh_namespace
from tests.support.operators import own_operator
from tests.support.tailnet import report_containers
from tests.support.waiting import wait_for
from tests.support.webhooks import own_webhook_configuration

pytestmark = pytest.mark.tailscale

FAMILY = family("amj")
SYSTEM = f"{FAMILY}system"
ACCOUNT = "worker-sa"
ENV = {
    "AGENT_MESH_TAILSCALE_TAILNET_DOMAIN": "tailnet.test",
    "AGENT_MESH_TAILSCALE_LOGIN_SERVER": "http://10.244.0.1:8080",
    "AGENT_MESH_TAILSCALE_IMAGE": "localhost/tailscale:v1.86.5",
    # endpoints become MagicDNS URLs only for an operator that can dial them (no call is
    # made here: no agent runs)
    "AGENT_MESH_TAILNET_PROXY": "http://127.0.0.1:9",
}


@dataclass
class Injecting:
    namespace: str
    core: client.CoreV1Api


@pytest.fixture(scope="module")
def injecting(
    cluster: Cluster, crds: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Injecting]:
    log: Path = tmp_path_factory.mktemp("injstatus") / "operator.log"
    core = client.CoreV1Api(cluster.api)
    with (
        own_webhook_configuration(cluster, "amj") as configuration,
        fresh_namespace(cluster, FAMILY) as namespace,
        own_operator(
            cluster,
            log,
            FAMILY,
            webhooks=True,
            extra_env={**ENV, "AGENT_MESH_WEBHOOK_CONFIGURATION": configuration},
        ),
    ):
        with contextlib.suppress(client.ApiException):  # there from an earlier run
            core.create_namespaced_secret(
                SYSTEM,
                {
                    "metadata": {"name": "agent-mesh-tailscale-auth"},
                    "stringData": {"authkey": "k"},
                },
            )
        core.create_namespaced_service_account(namespace, {"metadata": {"name": ACCOUNT}})
        _meshagent(cluster, namespace, "probe")
        wait_for(
            "the webhook to inject (the apiserver has its configuration)",
            lambda: _injects(core, namespace),
        )
        yield Injecting(namespace, core)


def _meshagent(cluster: Cluster, namespace: str, name: str) -> None:
    """An injected tailscale agent: no workload, its pods run as ACCOUNT."""
    apply_agent(
        cluster,
        namespace,
        name,
        "worker",
        network="tailscale",
        serviceAccountName=ACCOUNT,
        port=8081,
    )


def _injects(core: client.CoreV1Api, namespace: str) -> bool:
    """Whether a dry-run pod labelled for the probe agent comes back with the sidecar."""
    try:
        pod = core.create_namespaced_pod(namespace, _pod("probe", "probe"), dry_run="All")
    except client.ApiException:
        return False  # the apiserver cannot call the webhook yet
    return [c.name for c in pod.spec.containers] == ["agent", "tailscale"]


def _status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    agent = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshagents", name
    )
    return dict(agent.get("status") or {})


def _connected(
    cluster: Cluster, namespace: str, name: str, status: str, reason: str, says: str = ""
) -> dict[str, Any]:
    """The TailnetConnected condition once it has `status` and `reason` (and its message
    `says`)."""

    def check() -> dict[str, Any] | None:
        for c in _status(cluster, namespace, name).get("conditions") or []:
            if (
                c["type"] == "TailnetConnected"
                and (c["status"], c["reason"]) == (status, reason)
                and says in c["message"]
            ):
                return dict(c)
        return None

    found: dict[str, Any] = wait_for(f"{name}'s TailnetConnected={status} {reason} {says}", check)
    return found


def _pod(name: str, agent: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"agentmesh.io/agent": agent}},
        "spec": {
            "serviceAccountName": ACCOUNT,
            "automountServiceAccountToken": False,
            "containers": [{"name": "agent", "image": "localhost/agent-mesh:test"}],
        },
    }


def _create_pod(core: client.CoreV1Api, namespace: str, name: str, agent: str) -> list[str]:
    """The pod's containers as admitted (the webhook may have added the sidecar)."""
    created = core.create_namespaced_pod(namespace, _pod(name, agent))
    return [c.name for c in created.spec.containers]


def _device(core: client.CoreV1Api, ns: str, agent: str, fqdn: str, ips: list[str]) -> None:
    """What containerboot writes into the state Secret once the device is up."""
    wait_for(
        "the state Secret the operator creates",
        lambda: any(
            s.metadata.name == f"{agent}-tailscale" for s in core.list_namespaced_secret(ns).items
        ),
    )
    device = {"device_id": "nodeid-4", "device_fqdn": f"{fqdn}.", "device_ips": json.dumps(ips)}
    core.patch_namespaced_secret(
        f"{agent}-tailscale",
        ns,
        {"data": {k: base64.b64encode(v.encode()).decode() for k, v in device.items()}},
    )


def test_injected_sidecar_health_reaches_status_endpoint_and_condition(
    cluster: Cluster, injecting: Injecting
) -> None:
    ns, core = injecting.namespace, injecting.core
    _meshagent(cluster, ns, "worker")
    missing = _connected(cluster, ns, "worker", "False", "AgentPodMissing")
    assert "No pod labelled agentmesh.io/agent=worker" in missing["message"]

    fqdn = f"agent-mesh-{ns}-worker.tailnet.test"
    ips = ["100.64.0.4", "fd7a:115c:a1e0::4"]
    _device(core, ns, "worker", fqdn, ips)
    injected = _create_pod(core, ns, "worker-pod", "worker")
    assert injected == ["agent", "tailscale"]
    # no kubelet has reported yet: the sidecar is not running
    _connected(cluster, ns, "worker", "False", "SidecarNotRunning")

    report_containers(core, ns, "worker-pod", ready=True, state={"running": {}})
    up = _connected(cluster, ns, "worker", "True", "TailnetDeviceReady")
    assert fqdn in up["message"] and "worker-pod" in up["message"]
    status = _status(cluster, ns, "worker")
    assert status["tailscale"] == {
        "hostname": f"agent-mesh-{ns}-worker",
        "dnsName": fqdn,
        "ips": ips,
        "deviceId": "nodeid-4",
    }
    url = f"http://{fqdn}:8081"
    assert status["endpoint"] == url

    # the sidecar loses the control server: not ready; the identity stays, the URL goes
    report_containers(core, ns, "worker-pod", ready=False, state={"running": {}})
    down = _connected(cluster, ns, "worker", "False", "SidecarNotReady")
    assert "worker-pod" in down["message"] and "spec.endpoint" in down["message"]
    wait_for(
        "the MagicDNS endpoint to go", lambda: "endpoint" not in _status(cluster, ns, "worker")
    )
    assert _status(cluster, ns, "worker")["tailscale"]["dnsName"] == fqdn

    report_containers(core, ns, "worker-pod", ready=True, state={"running": {}})
    _connected(cluster, ns, "worker", "True", "TailnetDeviceReady")
    wait_for(
        "the MagicDNS endpoint back", lambda: _status(cluster, ns, "worker").get("endpoint") == url
    )

    # a second labelled pod (a rollout): the newest is judged, and both are named
    assert _create_pod(core, ns, "worker-pod-2", "worker") == ["agent", "tailscale"]
    two = _connected(cluster, ns, "worker", "False", "SidecarNotRunning")
    named = "2 pods are labelled agentmesh.io/agent=worker (worker-pod, worker-pod-2)"
    assert named in two["message"]
    assert "worker-pod-2, the newest, is judged" in two["message"]
    report_containers(
        core, ns, "worker-pod-2", ready=False, state={"waiting": {"reason": "CrashLoopBackOff"}}
    )
    _connected(cluster, ns, "worker", "False", "SidecarNotRunning", says="CrashLoopBackOff")
    core.delete_namespaced_pod("worker-pod-2", ns, grace_period_seconds=0)
    _connected(cluster, ns, "worker", "True", "TailnetDeviceReady")

    core.delete_namespaced_pod("worker-pod", ns, grace_period_seconds=0)
    gone = _connected(cluster, ns, "worker", "False", "AgentPodMissing")
    assert "agentmesh.io/agent=worker" in gone["message"]


def test_a_pod_admitted_before_its_meshagent_says_it_has_no_sidecar(
    cluster: Cluster, injecting: Injecting
) -> None:
    ns, core = injecting.namespace, injecting.core
    # the webhook admits it without the sidecar: its MeshAgent does not exist yet
    assert _create_pod(core, ns, "early-pod", "early") == ["agent"]
    _meshagent(cluster, ns, "early")
    bare = _connected(cluster, ns, "early", "False", "SidecarNotInjected")
    assert "early-pod" in bare["message"] and "no tailscale container" in bare["message"]
    assert "created before the webhook could inject it" in bare["message"]
    assert f"Re-create it running as ServiceAccount {ACCOUNT!r}" in bare["message"]
    assert "tailscale" not in _status(cluster, ns, "early")
