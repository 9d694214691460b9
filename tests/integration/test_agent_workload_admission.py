"""A managed agent's children as the real apiserver admits them: every object passes
validation (server-side dry-run create), and the generated pod passes PodSecurity
`restricted`, which the apiserver enforces at admission even without a node."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client, utils

from agent_mesh.tailscale.sidecar import SidecarSettings
from agent_mesh.workloads.objects import AgentObjects, build
from tests.support.cluster import Cluster

pytestmark = pytest.mark.tailscale

SETTINGS = SidecarSettings(
    image="tailscale/tailscale:v1.86.5",
    tailnet_domain="tailnet.test",
    login_server="http://127.0.0.1:8080",
)


def _meshagent(namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "summarizer", "namespace": namespace, "uid": "uid-1"},
        "spec": {
            "agentType": "worker",
            "network": "tailscale",
            "workload": {"spec": pod},
        },
    }


def _restricted(cluster: Cluster, namespace: str) -> None:
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    client.CoreV1Api(cluster.api).patch_namespace(namespace, {"metadata": {"labels": labels}})


def _dry_run_pod(cluster: Cluster, namespace: str, objects: AgentObjects) -> None:
    """The StatefulSet's pod, dry-run created as its controller would (its ServiceAccount
    must exist: the ServiceAccount admission plugin checks)."""
    assert objects.service_account is not None
    utils.create_from_dict(cluster.api, objects.service_account, namespace=namespace)
    spec = objects.statefulset["spec"]["template"]["spec"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
    client.CoreV1Api(cluster.api).create_namespaced_pod(namespace, pod, dry_run="All")


def test_managed_tailscale_agents_pod_passes_podsecurity_restricted(
    cluster: Cluster, namespace: str
) -> None:
    _restricted(cluster, namespace)
    plain = {"containers": [{"name": "agent", "image": "agent:1.0"}]}
    objects = build(_meshagent(namespace, plain), default_network="direct", tailscale=SETTINGS)
    _dry_run_pod(cluster, namespace, objects)


def test_restricted_namespace_really_refuses_a_pod_the_user_made_privileged(
    cluster: Cluster, namespace: str
) -> None:
    _restricted(cluster, namespace)  # the control: PodSecurity is on and enforcing
    privileged = {
        "containers": [
            {"name": "agent", "image": "agent:1.0", "securityContext": {"privileged": True}}
        ]
    }
    objects = build(_meshagent(namespace, privileged), default_network="direct", tailscale=SETTINGS)
    with pytest.raises(client.ApiException) as refused:
        _dry_run_pod(cluster, namespace, objects)
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest": privileged (container "agent"' in message


def test_every_child_of_a_managed_tailscale_agent_is_valid_for_the_apiserver(
    cluster: Cluster, namespace: str
) -> None:
    pod = {"containers": [{"name": "agent", "image": "agent:1.0"}]}
    objects = build(_meshagent(namespace, pod), default_network="direct", tailscale=SETTINGS)
    for child in objects.all():
        utils.create_from_dict(cluster.api, child, namespace=namespace, dry_run="All")
