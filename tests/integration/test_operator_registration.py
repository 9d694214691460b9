"""A MeshAgent applied to the real apiserver gets its status from the running operator."""

from __future__ import annotations

from typing import Any

import pytest

from agent_mesh.testing import manifest
from tests.support.cluster import Cluster
from tests.support.waiting import wait_for

GROUP, VERSION = "agentmesh.io", "v1alpha1"


def _get(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
        GROUP, VERSION, namespace, "meshagents", name
    )


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next(
        (c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None
    )


@pytest.mark.smoke
def test_new_agent_becomes_pending_and_registered(
    cluster: Cluster, operator: Any, namespace: str
) -> None:
    manifest = f"""
apiVersion: {GROUP}/{VERSION}
kind: MeshAgent
metadata:
  name: worker-1
spec:
  agentType: worker
  capabilities: [summarize]
"""
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    agent = wait_for(
        "status.registeredAt",
        lambda: (
            (a := _get(cluster, namespace, "worker-1")).get("status", {}).get("registeredAt") and a
        ),
    )
    status = agent["status"]
    assert status["healthStatus"] == "pending"
    assert status["observedGeneration"] == agent["metadata"]["generation"]
    registered = _condition(agent, "Registered")
    ready = _condition(agent, "Ready")
    assert registered is not None and registered["status"] == "True"
    assert ready is not None and ready["status"] == "False"
    assert ready["reason"] == "AwaitingHeartbeat"
    assert "spec" in agent and "agentId" not in agent["spec"]  # the operator never writes spec
    row = cluster.kubectl("get", "ma", "worker-1", "-n", namespace).stdout.splitlines()[1]
    assert "pending" in row


def test_a_spec_change_is_observed(cluster: Cluster, operator: Any, namespace: str) -> None:
    body = manifest("MeshAgent", "critic", {"agentType": "critic", "capabilities": ["review"]})
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "meshagents", body)
    first = wait_for(
        "registration",
        lambda: (
            (a := _get(cluster, namespace, "critic")).get("status", {}).get("observedGeneration")
            and a
        ),
    )
    cluster.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "meshagents",
        "critic",
        {"spec": {"capabilities": ["review", "feedback"]}},
    )
    second = wait_for(
        "observedGeneration 2",
        lambda: (
            (a := _get(cluster, namespace, "critic"))["status"].get("observedGeneration") == 2 and a
        ),
    )
    assert second["status"]["registeredAt"] == first["status"]["registeredAt"]
    assert _condition(second, "Registered")["observedGeneration"] == 2  # type: ignore[index]


def test_registration_is_announced_as_an_event(
    cluster: Cluster, operator: Any, namespace: str
) -> None:
    body = manifest("MeshAgent", "monitor", {"agentType": "monitor", "agentId": "mon-1"})
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "meshagents", body)

    def event() -> str:
        out = cluster.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            "involvedObject.name=monitor",
            "-o",
            "jsonpath={.items[*].message}",
        ).stdout
        return out if "registered" in out else ""

    assert "Agent mon-1 registered" in wait_for("a Registered event", event)
