"""MeshTasks by the Kubernetes API, as a user applies them: created, read, waited on; and
the status of MeshAgents (each, and how many of a namespace report healthy)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, Final

from kubernetes import client

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


OVERSIZED_PAYLOAD: Final = {"text": "x" * (300 * 1024)}
"""Over the webhook's limit on spec.payload; the CRD's schema alone takes it."""


def task_refusal(cluster: Cluster, namespace: str, prefix: str, **spec: Any) -> str | None:
    """Why the apiserver refuses a new MeshTask of `spec` (named `prefix`-<random>): its
    status and message; None when it takes it (the task is then deleted again)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    try:
        create_task(cluster, namespace, name, **spec)
    except client.ApiException as error:
        return f"{error.status} {json.loads(error.body or '{}').get('message', '')}"
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "meshtasks", name)
    return None


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


def agent_condition(
    cluster: Cluster, namespace: str, name: str, type_: str
) -> dict[str, Any] | None:
    """The MeshAgent's condition `type_`, None while it has none."""
    conditions = agent_status(cluster, namespace, name).get("conditions") or []
    return next((dict(c) for c in conditions if c["type"] == type_), None)


def wait_agent_condition(
    cluster: Cluster, namespace: str, name: str, type_: str, timeout: float = 30, **fields: str
) -> dict[str, Any]:
    """The MeshAgent's condition `type_` once it has `fields` (e.g. `reason=`,
    `status=`; any, when none are given)."""

    def matching() -> dict[str, Any] | None:
        condition = agent_condition(cluster, namespace, name, type_)
        if condition is None or any(condition.get(k) != v for k, v in fields.items()):
            return None
        return condition

    what = f"{name}'s {type_} condition" + (f" with {fields}" if fields else "")
    return dict(wait_for(what, matching, timeout=timeout))


def fails_over(
    cluster: Cluster,
    namespace: str,
    name: str,
    strike: Callable[[str], object],
    within: float = 60,
    **spec: Any,
) -> dict[str, Any]:
    """A sleep task `name` (`spec`, retries 0) for two healthy echo agents, "first" and
    "second": `strike(agent_id)` hits the one running it, and the task must complete on
    the other without using a retry (attempts: that one Unreachable, the other Succeeded)
    within `within` seconds. The final status, for what the test asserts besides."""
    create_task(
        cluster, namespace, name, taskType="sleep", requiredCapabilities=["echo"], retries=0, **spec
    )
    doomed = wait_phase(cluster, namespace, name, {"Running"})["agentId"]
    survivor = "second" if doomed == "first" else "first"
    strike(doomed)
    status = wait_phase(cluster, namespace, name, {"Completed", "Failed", "TimedOut"}, within)
    assert status["phase"] == "Completed", status  # retries: 0, yet it completed
    assert status["agentId"] == survivor, status
    outcomes = [(a["agentId"], a["outcome"]) for a in status["attempts"]]
    assert outcomes == [(doomed, "Unreachable"), (survivor, "Succeeded")], status
    return status
