"""The machine's one node, shared by every `node` test of the session.

Started on first use (after the images are built or found in the cache) and stopped at
the end of the session, or earlier by the lifecycle tests, which run last. Where the
machine cannot run a node the tests are skipped with the plain reason, except in CI
(CI=true), where that is a failure.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from agent_mesh.testing.demo_chart import mesh_volumes
from tests.support.cluster import Cluster
from tests.support.waiting import wait_for


@dataclass
class NodeCluster(Cluster):
    """The local cluster with a node: pods run, built from the project's own image."""

    image: str = ""
    log_dir: Path = field(default_factory=Path)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)


@dataclass
class NodeHolder:
    """Starts the shared node on demand; the lifecycle tests stop it to test `dev down`."""

    plane_dir: Path
    node: Any = None
    cluster: NodeCluster | None = None
    sysctls_before: dict[str, str] = field(default_factory=dict)
    paths_before: list[str] = field(default_factory=list)

    def ensure(self) -> NodeCluster:
        if self.cluster is not None:
            return self.cluster
        from agent_mesh.devcluster import ensure_binaries, hoststate, network
        from agent_mesh.devcluster import node as devnode

        reason = devnode.unsupported_reason()
        if reason:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI must run the node tests, but this machine cannot: {reason}")
            pytest.skip(f"no node on this machine: {reason}")
        if not self.sysctls_before:
            self.sysctls_before = network.read_sysctls()
            self.paths_before = hoststate.existing(hoststate.FIXED_PATHS)
        binaries = ensure_binaries()
        try:
            node = devnode.prepare(binaries, self.plane_dir)
            node.start()
        except devnode.NodeBusy as busy:
            pytest.fail(f"the node tests need the machine's one node: {busy}")
        if not node.images:
            pytest.fail("the node has no project image: run the tests from a source checkout")
        self.node = node
        api = config.new_client_from_config(str(node.kubeconfig))
        self.cluster = NodeCluster(
            node.kubeconfig,
            str(binaries.kubectl),
            api,
            local=True,
            image=node.images[0].name,
            log_dir=node.logs_dir,
        )
        return self.cluster

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()
        if self.cluster is not None:
            self.cluster.api.close()
        self.node = None
        self.cluster = None


@pytest.fixture(scope="session")
def node_holder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHolder]:
    if os.environ.get("KUBECONFIG"):
        pytest.skip("KUBECONFIG is set: the node tests need the local cluster's own node")
    holder = NodeHolder(tmp_path_factory.mktemp("node-plane"))
    yield holder
    holder.stop()


@pytest.fixture(scope="session")
def node_cluster(node_holder: NodeHolder) -> NodeCluster:
    return node_holder.ensure()


@pytest.fixture
def node_namespace(node_cluster: NodeCluster) -> Iterator[str]:
    name = f"node-{uuid.uuid4().hex[:8]}"
    node_cluster.core.create_namespace({"metadata": {"name": name}})
    wait_for(
        f"the default ServiceAccount of {name}",
        lambda: _has_default_sa(node_cluster, name),
        timeout=30,
    )
    yield name
    node_cluster.core.delete_namespace(name, propagation_policy="Background")


def _has_default_sa(cluster: NodeCluster, namespace: str) -> bool:
    try:
        cluster.core.read_namespaced_service_account("default", namespace)
    except client.ApiException:
        return False
    return True


def pod_phase(cluster: NodeCluster, namespace: str, name: str) -> str:
    try:
        return str(cluster.core.read_namespaced_pod(name, namespace).status.phase)
    except client.ApiException:
        return "Absent"


def wait_pod(cluster: NodeCluster, namespace: str, name: str, phase: str = "Running") -> None:
    def reached() -> bool:
        current = pod_phase(cluster, namespace, name)
        if current == "Failed" or (current == "Succeeded" and phase == "Running"):
            logs = cluster.kubectl("logs", "-n", namespace, name, check=False)
            pytest.fail(f"pod {namespace}/{name} is {current}:\n{logs.stdout}{logs.stderr}")
        return current == phase

    wait_for(f"pod {namespace}/{name} to be {phase}", reached, timeout=90, interval=0.25)


def python_pod(
    cluster: NodeCluster,
    namespace: str,
    name: str,
    script: str,
    *,
    labels: dict[str, str] | None = None,
    service_account: str | None = None,
    restart: str = "Never",
    **spec: Any,
) -> None:
    """A pod of the project's image running `python3 -c script`."""
    body: dict[str, Any] = {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": cluster.image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", script],
                }
            ],
            **({"serviceAccountName": service_account} if service_account else {}),
            **spec,
        },
    }
    cluster.core.create_namespaced_pod(namespace, body)


def exec_python(
    cluster: NodeCluster, namespace: str, pod: str, script: str
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("exec", "-n", namespace, pod, "--", "python3", "-c", script, check=False)


def logs_of(cluster: NodeCluster, namespace: str, pod: str) -> str:
    return cluster.kubectl("logs", "-n", namespace, pod).stdout


def echo_agent_pod(image: str, agent: str, mesh_url: str) -> dict[str, Any]:
    """The example echo worker as a pod running as ServiceAccount `echo`: it exchanges its
    projected token (testing.demo_chart.mesh_volumes) at `mesh_url`, verified with the
    operator's CA bundle ConfigMap, and serves tasks at its pod IP. Needs the ConfigMap
    `echo-worker` holding examples/echo_worker.py."""
    return {
        "metadata": {"name": f"{agent}-0", "labels": {"agentmesh.io/agent": agent}},
        "spec": {
            "serviceAccountName": "echo",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "agent",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "/examples/echo_worker.py"],
                    "env": [
                        {
                            "name": "POD_IP",
                            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                        },
                        {"name": "AGENT_MESH_URL", "value": mesh_url},
                        {"name": "AGENT_MESH_CA_FILE", "value": "/var/run/agent-mesh-ca/ca.crt"},
                        {"name": "AGENT_MESH_PORT", "value": "9001"},
                        {"name": "AGENT_MESH_ENDPOINT", "value": "http://$(POD_IP):9001"},
                        {"name": "AGENT_MESH_HEARTBEAT_SECONDS", "value": "2"},
                        {"name": "AGENT_MESH_LOG_FORMAT", "value": "text"},
                    ],
                    "volumeMounts": [
                        {"name": "example", "mountPath": "/examples"},
                        {"name": "mesh-ca", "mountPath": "/var/run/agent-mesh-ca"},
                        {"name": "token", "mountPath": "/var/run/secrets/agent-mesh"},
                    ],
                }
            ],
            "volumes": [
                {"name": "example", "configMap": {"name": "echo-worker"}},
                *mesh_volumes(),
            ],
        },
    }
