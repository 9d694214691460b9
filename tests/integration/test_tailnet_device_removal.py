"""Deleting a tailscale MeshAgent removes its device from the control server (a real
headscale of the local tailnet, through its REST API and an API key), so its MagicDNS name
is free for the next agent; a device id that names another device is left alone. The
devices are real tailnet nodes; the state Secrets and pod statuses are written as
containerboot and the kubelet would (control plane only)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.devcluster.tailnet import LocalTailnet, TailnetNode
from tests.support.cluster import Cluster
from tests.support.namespaces import SESSION
from tests.support.operators import operator_with_namespace
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.tailscale, pytest.mark.timeout(900)]

PREFIX = f"amv-{SESSION}-"


def _nodes(tailnet: LocalTailnet) -> dict[str, str]:
    """headscale's nodes: id → name."""
    listed = json.loads(tailnet.headscale("nodes", "list", "--output", "json") or "[]")
    return {str(n["id"]): n["name"] for n in listed or []}


def _agent_with_device(
    cluster: Cluster, ns: str, name: str, node: TailnetNode, device_id: str
) -> None:
    """A managed tailscale MeshAgent whose sidecar reports `node` as its device (its id
    `device_id`) and is running and ready."""
    cluster.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        "meshagents",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MeshAgent",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "agentType": "worker",
                "network": "tailscale",
                "workload": {"spec": {"containers": [{"name": "agent", "image": "a:1"}]}},
            },
        },
    )
    core = client.CoreV1Api(cluster.api)

    def exists(read: Any, child: str) -> bool:
        try:
            read(child, ns)
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    wait_for("the state Secret", lambda: exists(core.read_namespaced_secret, f"{name}-tailscale"))
    wait_for("the ServiceAccount", lambda: exists(core.read_namespaced_service_account, name))
    device = {
        "device_id": device_id,
        "device_fqdn": f"agent-mesh-{ns}-{name}.{node.fqdn.split('.', 1)[1]}.",
        "device_ips": json.dumps(node.ips),
    }
    core.patch_namespaced_secret(
        f"{name}-tailscale",
        ns,
        {"data": {k: base64.b64encode(v.encode()).decode() for k, v in device.items()}},
    )
    labels = {"agentmesh.io/agent": name, "app.kubernetes.io/managed-by": "agent-mesh"}
    pod = {
        "metadata": {"name": f"{name}-0", "labels": labels},
        "spec": {
            "serviceAccountName": name,
            "automountServiceAccountToken": False,
            "nodeSelector": {"kind": "agents"},
            "containers": [
                {"name": "agent", "image": "a:1"},
                {"name": "tailscale", "image": "t:1"},
            ],
        },
    }
    core.create_namespaced_pod(ns, pod)
    running = {
        "image": "x",
        "imageID": "",
        "restartCount": 0,
        "ready": True,
        "state": {"running": {}},
    }
    statuses = [{"name": "agent", **running}, {"name": "tailscale", **running}]
    core.patch_namespaced_pod_status(f"{name}-0", ns, {"status": {"containerStatuses": statuses}})

    def shown() -> bool:
        agent = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "meshagents", name)
        return ((agent.get("status") or {}).get("tailscale") or {}).get("deviceId") == device_id

    wait_for(f"{name}'s device in its status", shown)


def test_deleting_an_agent_removes_its_device_and_only_its_own(
    cluster: Cluster, crds: list[dict[str, Any]], tailnet: LocalTailnet, tmp_path: Path
) -> None:
    api_key = tailnet.headscale("apikeys", "create", "--expiration", "1h").strip().splitlines()[-1]
    ns, operator = operator_with_namespace(
        cluster,
        tmp_path / "operator.log",
        PREFIX,
        extra_env={
            "AGENT_MESH_TAILSCALE_TAILNET_DOMAIN": tailnet.domain,
            "AGENT_MESH_TAILSCALE_LOGIN_SERVER": tailnet.url,
            "AGENT_MESH_HEADSCALE_API_KEY": api_key,
            "AGENT_MESH_TAILSCALE_IMAGE": "localhost/tailscale:v1.86.5",
        },
    )
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_secret(
        f"{PREFIX}system",
        {"metadata": {"name": "agent-mesh-tailscale-auth"}, "stringData": {"authkey": "k"}},
    )
    try:
        gone = tailnet.join(f"agent-mesh-{ns}-gone")
        other = tailnet.join("someone-else")
        gone_id, other_id = gone.status()["Self"]["ID"], other.status()["Self"]["ID"]
        assert _nodes(tailnet)[gone_id] == f"agent-mesh-{ns}-gone"
        _agent_with_device(cluster, ns, "gone", gone, gone_id)
        # an agent whose state Secret names another agent's device id (its pod can write it)
        _agent_with_device(cluster, ns, "liar", other, other_id)

        for name in ("gone", "liar"):
            cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "meshagents", name)
        wait_for(
            "the device to leave headscale", lambda: gone_id not in _nodes(tailnet), timeout=30
        )
        log = operator.log.read_text()
        wait_for("the liar's deletion handled", lambda: "not-ours" in operator.log.read_text())
        assert other_id in _nodes(tailnet)  # not its device: left alone
        assert "removed" in log
    finally:
        operator.stop()
        core.delete_namespace(ns, propagation_policy="Background")
        core.delete_namespaced_secret("agent-mesh-tailscale-auth", f"{PREFIX}system")
