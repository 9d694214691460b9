"""MeshTasks end to end: the real apiserver, the operator process, agent processes from
examples/ on 127.0.0.1. A task applied with kubectl comes back Completed with its result."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.agentprocs import AgentProcess, launch, register, wait_ready
from tests.conftest import TEST_NAMESPACE_PREFIX, Cluster, OperatorProcess, wait_for
from tests.meshhelpers import GROUP, VERSION


def create_task(cluster: Cluster, namespace: str, name: str, **spec: Any) -> None:
    cluster.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "meshtasks",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MeshTask",
            "metadata": {"name": name},
            "spec": spec,
        },
    )


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


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    name = f"{TEST_NAMESPACE_PREFIX}tasks-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(cluster.api)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def agents(
    cluster: Cluster, operator: OperatorProcess, ns: str, tmp_path: Path
) -> Iterator[dict[str, AgentProcess]]:
    """start(agent_id, capabilities): an echo_worker process registered in `ns`."""
    running: dict[str, AgentProcess] = {}
    yield running
    for agent in running.values():
        agent.stop()


def start_worker(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    running: dict[str, AgentProcess],
    log_dir: Path,
    agent_id: str,
    capabilities: list[str],
) -> AgentProcess:
    url, credential = register(cluster, ns, agent_id, "worker", capabilities)
    agent = launch("echo_worker.py", operator, ns, agent_id, url, credential, log_dir)
    running[agent_id] = agent
    wait_ready(agent)
    return agent


def test_a_task_applied_with_kubectl_completes_with_its_result(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    agents: dict[str, AgentProcess],
    tmp_path: Path,
) -> None:
    start_worker(cluster, operator, ns, agents, tmp_path, "echo-1", ["echo"])
    create_task(
        cluster, ns, "hello", taskType="echo", requiredCapabilities=["echo"], payload={"x": 1}
    )
    status = wait_phase(cluster, ns, "hello", {"Completed", "Failed", "TimedOut"})
    assert status["phase"] == "Completed", status
    assert status["result"] == {"x": 1}
    assert status["agentId"] == "echo-1"
    assert status["attempt"] == 1
    assert [a["outcome"] for a in status["attempts"]] == ["Succeeded"]
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "True"
    table = cluster.kubectl("get", "meshtasks", "-n", ns).stdout
    assert "hello" in table and "Completed" in table and "echo-1" in table
