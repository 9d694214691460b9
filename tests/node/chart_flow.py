"""The chart's flow on the local node, shared by the install test and the RBAC proof:
helm itself, the operator's pod and its readiness, the webhook's refusal, an agent pod of
the project's image completing a task."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from tests.node.conftest import NodeCluster, echo_agent_pod, pod_phase
from tests.support.mesh_api import apply_agent
from tests.support.tasks import OVERSIZED_PAYLOAD, create_task, task_refusal
from tests.support.venvs import ROOT
from tests.support.waiting import wait_for

CHART = ROOT / "charts" / "agent-mesh"
CRDS = ("meshagents", "meshtasks", "aclpolicies")
# the example agent as the project's image ships it (package data of agent_mesh)
RUN_ECHO_WORKER = (
    "import pathlib, runpy, agent_mesh; runpy.run_path(str(pathlib.Path(agent_mesh.__file__)"
    ".parent / 'examples' / 'echo_worker.py'), run_name='__main__')"
)


def make_namespace(cluster: NodeCluster, name: str, labels: dict[str, str] | None = None) -> str:
    cluster.core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    wait_for(
        f"the default ServiceAccount of {name}",
        lambda: exists(lambda: cluster.core.read_namespaced_service_account("default", name)),
    )
    return name


def run_helm(helm: Path, cluster: NodeCluster, *args: str) -> str:
    proc = subprocess.run(
        [str(helm), "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def exists(read: Any) -> bool:
    try:
        read()
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def operator_pod(cluster: NodeCluster, namespace: str) -> Any:
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/component=operator"
    ).items
    return pods[0] if len(pods) == 1 else None


def operator_logs(cluster: NodeCluster, namespace: str) -> str:
    pod = operator_pod(cluster, namespace)
    if pod is None:
        return "(no single operator pod)"
    proc = cluster.kubectl("logs", "-n", namespace, pod.metadata.name, "--tail=60", check=False)
    return proc.stdout + proc.stderr


@contextlib.contextmanager
def operator_log_on_failure(cluster: NodeCluster, namespace: str) -> Iterator[None]:
    try:
        yield
    except pytest.fail.Exception as failed:
        logs = operator_logs(cluster, namespace)
        pytest.fail(f"{failed}\n--- the operator pod's log, last lines:\n{logs[-5000:]}")


def wait_operator_ready(cluster: NodeCluster, namespace: str, previous: str | None = None) -> str:
    """The name of the operator pod once it is Ready (a new one when `previous` is given)."""

    def ready() -> str | None:
        pod = operator_pod(cluster, namespace)
        if pod is None or pod.metadata.name == previous or pod.metadata.deletion_timestamp:
            return None
        conditions = {c.type: c.status for c in (pod.status.conditions or [])}
        return str(pod.metadata.name) if conditions.get("Ready") == "True" else None

    with operator_log_on_failure(cluster, namespace):
        name: str = wait_for("the operator pod to be Ready", ready, timeout=180, interval=0.5)
    return name


def crds_established(cluster: NodeCluster) -> bool:
    ext = client.ApiextensionsV1Api(cluster.api)
    for plural in CRDS:
        conditions = ext.read_custom_resource_definition(f"{plural}.{GROUP}").status.conditions
        if not any(c.type == "Established" and c.status == "True" for c in conditions or []):
            return False
    return True


def oversized_task_refusal(cluster: NodeCluster, namespace: str) -> str | None:
    return task_refusal(cluster, namespace, "big", taskType="echo", payload=OVERSIZED_PAYLOAD)


def assert_webhook_called(cluster: NodeCluster, agents: str, release: str) -> None:
    """The apiserver calls the webhook through its Service, trusting the injected CA."""
    with operator_log_on_failure(cluster, release):
        refusal = wait_for(
            "the webhook to refuse an oversized MeshTask (not a failed call: the Service "
            "routes to a new pod a moment after it is Ready)",
            lambda: webhook_refusal(cluster, agents),
            timeout=60,
            interval=0.5,
        )
    assert "spec.payload" in refusal, refusal


def webhook_refusal(cluster: NodeCluster, namespace: str) -> str | None:
    """The webhook's own refusal (422) of an oversized MeshTask, or None."""
    refusal = oversized_task_refusal(cluster, namespace)
    return refusal if refusal is not None and refusal.startswith("422") else None


def run_agent_and_task(
    cluster: NodeCluster, agents: str, release: str, mesh_url: str, within: float = 180
) -> str:
    """An echo agent pod from the project's image joins through token exchange and
    completes a MeshTask created with kubectl (each step within `within` seconds); the
    task's name."""
    core = cluster.core
    if not exists(lambda: core.read_namespaced_service_account("echo", agents)):
        core.create_namespaced_service_account(agents, {"metadata": {"name": "echo"}})
        apply_agent(
            cluster, agents, "echo", "worker", capabilities=["echo"], serviceAccountName="echo"
        )
    with operator_log_on_failure(cluster, release):
        wait_for(
            "the operator's CA bundle in the agents' namespace",
            lambda: exists(lambda: core.read_namespaced_config_map("agent-mesh-ca.crt", agents)),
            timeout=within,
        )
    pod = echo_agent_pod(cluster.image, "echo", mesh_url)
    container = pod["spec"]["containers"][0]
    container["command"] = ["python3", "-c", RUN_ECHO_WORKER]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "example"]
    pod["spec"]["volumes"] = [v for v in pod["spec"]["volumes"] if v["name"] != "example"]
    with contextlib.suppress(client.ApiException):
        core.delete_namespaced_pod("echo-0", agents, grace_period_seconds=0)
    wait_for(
        "the previous agent pod to go", lambda: pod_phase(cluster, agents, "echo-0") == "Absent"
    )
    core.create_namespaced_pod(agents, pod)

    task = f"hello-{uuid.uuid4().hex[:6]}"
    create_task(
        cluster, agents, task, taskType="echo", requiredCapabilities=["echo"], payload={"x": 1}
    )

    def finished() -> dict[str, Any] | None:
        if pod_phase(cluster, agents, "echo-0") in ("Failed", "Succeeded"):
            logs = cluster.kubectl("logs", "-n", agents, "echo-0", check=False).stdout
            pytest.fail(f"the agent pod ended:\n{logs}")
        body = cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, agents, "meshtasks", task
        )
        status = body.get("status") or {}
        return status if status.get("phase") in ("Completed", "Failed", "TimedOut") else None

    with operator_log_on_failure(cluster, release):
        status = wait_for("the MeshTask to finish", finished, timeout=within, interval=0.5)
    assert (status["phase"], status["result"], status["agentId"]) == ("Completed", {"x": 1}, "echo")
    return task


def custom_resources(cluster: NodeCluster, namespace: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for plural in CRDS:
        listing = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        found += listing["items"]
    return found


def delete_custom_resources(cluster: NodeCluster, namespace: str) -> None:
    """With no operator running, every custom resource goes: none waits on a finalizer."""
    assert not [
        (o["kind"], o["metadata"]["name"], o["metadata"]["finalizers"])
        for o in custom_resources(cluster, namespace)
        if o["metadata"].get("finalizers")
    ]
    for plural in CRDS:
        cluster.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    wait_for("the custom resources to be gone", lambda: not custom_resources(cluster, namespace))
