"""An agent as a real pod: the example echo worker from the project's image exchanges its
projected ServiceAccount token at the operator (TokenReview, bound to its pod), turns
healthy and completes a MeshTask. The operator runs as a process on the harness's own
address, which is in its mesh API certificate."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.testing import OperatorProcess, manifest
from tests.node.conftest import NodeCluster, echo_agent_pod, logs_of, pod_phase
from tests.support.cluster import install_crds
from tests.support.mesh_api import apply_agent
from tests.support.operators import log_records, start_operator
from tests.support.waiting import wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HOST_ADDRESS = "10.244.0.1"  # the harness's address on the node's bridge


@pytest.fixture(scope="module")
def agent_namespace(node_cluster: NodeCluster) -> Iterator[str]:
    """Made before the operator starts: kopf (1.45) can miss a namespace created while it
    makes its first namespace listing, and would then never watch it."""
    name = f"node-agents-{uuid.uuid4().hex[:6]}"
    node_cluster.core.create_namespace({"metadata": {"name": name}})
    yield name
    node_cluster.core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def node_operator(
    node_cluster: NodeCluster, agent_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    install_crds(node_cluster)
    operator = start_operator(
        node_cluster,
        tmp_path_factory.mktemp("node-operator") / "operator.log",
        watch="node-*",
        operator_namespace="agent-mesh-system",
        mesh_host=HOST_ADDRESS,
        extra_env={"AGENT_MESH_TLS_EXTRA_SANS": HOST_ADDRESS},
    )
    yield operator
    operator.stop()


def test_echo_agent_pod_exchanges_its_projected_token_turns_healthy_and_completes_a_task(
    node_cluster: NodeCluster, node_operator: OperatorProcess, agent_namespace: str
) -> None:
    node_namespace = agent_namespace
    core = node_cluster.core
    wait_for(
        f"the default ServiceAccount of {node_namespace}",
        lambda: _exists(core.read_namespaced_service_account, "default", node_namespace),
    )
    core.create_namespaced_service_account(node_namespace, {"metadata": {"name": "echo"}})
    core.create_namespaced_config_map(
        node_namespace,
        {
            "metadata": {"name": "echo-worker"},
            "data": {"echo_worker.py": (EXAMPLES / "echo_worker.py").read_text()},
        },
    )
    # a pod the user runs: its MeshAgent names the ServiceAccount the pod runs as, or the
    # operator refuses the pod's token (a label alone never picks an identity)
    apply_agent(
        node_cluster,
        node_namespace,
        "echo",
        "worker",
        capabilities=["echo"],
        serviceAccountName="echo",
    )
    with _operator_log_on_failure(node_operator):
        wait_for(
            "the operator's CA bundle in the agent's namespace",
            lambda: _config_map_exists(node_cluster, node_namespace, "agent-mesh-ca.crt"),
            timeout=120,
        )
    pod = echo_agent_pod(node_cluster.image, "echo", node_operator.mesh_url)
    core.create_namespaced_pod(node_namespace, pod)

    def agent_status() -> dict[str, Any] | None:
        if pod_phase(node_cluster, node_namespace, "echo-0") in ("Failed", "Succeeded"):
            pytest.fail(f"the agent pod ended:\n{logs_of(node_cluster, node_namespace, 'echo-0')}")
        body = node_cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, node_namespace, "meshagents", "echo"
        )
        status = body.get("status") or {}
        return status if status.get("healthStatus") == "healthy" else None

    with _operator_log_on_failure(node_operator):
        status = wait_for("the agent pod to turn healthy", agent_status, timeout=120, interval=0.5)
    pod_ip = core.read_namespaced_pod("echo-0", node_namespace).status.pod_ip
    assert status.get("endpoint") == f"http://{pod_ip}:9001", status
    # The pod holds no credential: its mesh identity came from its projected ServiceAccount
    # token, reviewed by the apiserver and bound to the pod labelled for the agent.
    issued = _audited(node_operator, "token.issued", node_namespace)
    assert {(e.get("method"), e.get("agentId")) for e in issued} == {
        ("serviceAccountToken", "echo")
    }, issued

    node_cluster.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        node_namespace,
        "meshtasks",
        manifest(
            "MeshTask",
            "hello",
            {"taskType": "echo", "requiredCapabilities": ["echo"], "payload": {"x": 1}},
        ),
    )

    def finished() -> dict[str, Any] | None:
        body = node_cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, node_namespace, "meshtasks", "hello"
        )
        status = body.get("status") or {}
        return status if status.get("phase") in ("Completed", "Failed", "TimedOut") else None

    with _operator_log_on_failure(node_operator):
        task = wait_for("the MeshTask to finish", finished, timeout=90, interval=0.5)
    assert task["phase"] == "Completed", task
    assert (task["result"], task["agentId"]) == ({"x": 1}, "echo")


@contextlib.contextmanager
def _operator_log_on_failure(operator: OperatorProcess) -> Iterator[None]:
    try:
        yield
    except pytest.fail.Exception as failed:
        pytest.fail(f"{failed}\n--- the operator's log, last lines:\n{operator.logs()[-4000:]}")


def _audited(operator: OperatorProcess, event: str, namespace: str) -> list[dict[str, Any]]:
    """The operator's audit records of `event` in `namespace` (from its JSON log)."""
    found = []
    for entry in log_records(operator):
        fields = {**entry, **(entry.get("fields") or {})}
        if fields.get("event") == event and fields.get("namespace") == namespace:
            found.append(fields)
    return found


def _config_map_exists(cluster: NodeCluster, namespace: str, name: str) -> bool:
    return _exists(cluster.core.read_namespaced_config_map, name, namespace)


def _exists(read: Any, name: str, namespace: str) -> bool:
    from kubernetes import client

    try:
        read(name, namespace)
    except client.ApiException:
        return False
    return True
