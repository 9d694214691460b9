"""MeshTasks by the Kubernetes API, as a user applies them: created, read, waited on; and
the status of MeshAgents (each, and how many of a namespace report healthy)."""

from __future__ import annotations

from typing import Any

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.testing import manifest
from tests.support.cluster import Cluster
from tests.support.waiting import wait_for


def create_task(cluster: Cluster, namespace: str, name: str, **spec: Any) -> None:
    cluster.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "meshtasks",
        manifest("MeshTask", name, spec),
    )


def create_tasks(cluster: Cluster, namespace: str, names: list[str], **spec: Any) -> None:
    """A MeshTask of `spec` for each of `names`, in order; a task's payload is its name
    unless `spec` gives one."""
    for name in names:
        create_task(cluster, namespace, name, **{"payload": name, **spec})


def task_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    body = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "meshtasks", name)
    return dict(body.get("status") or {})


def wait_phase(
    cluster: Cluster, namespace: str, name: str, phases: set[str], timeout: float = 60
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = task_status(cluster, namespace, name)
        return status if status.get("phase") in phases else None

    return dict(wait_for(f"task {name} to reach {phases}", reached, timeout=timeout))


def agent_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    body = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshagents", name
    )
    return dict(body.get("status") or {})


def healthy(cluster: Cluster, ns: str) -> int:
    items = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "meshagents")
    return sum(1 for i in items["items"] if i.get("status", {}).get("healthStatus") == "healthy")
