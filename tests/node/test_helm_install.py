"""The chart on the local node, the way a user installs it: `helm install` runs the
operator as a pod (admitted under PodSecurity `restricted`) that the apiserver calls for
admission through its Service, an agent pod of the project's image exchanges its projected
ServiceAccount token and completes a task; `helm upgrade` and `helm uninstall` leave the
cluster as they should. Then the same with `kubectl apply -k config/default`."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.node.chart_flow import (
    CHART,
    assert_webhook_called,
    crds_established,
    delete_custom_resources,
    exists,
    make_namespace,
    operator_pod,
    run_agent_and_task,
    run_helm,
    wait_operator_ready,
)
from tests.node.conftest import NodeCluster, NodeHolder
from tests.support.venvs import ROOT
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def helm() -> Path:
    from agent_mesh.devcluster.binaries import ensure_helm

    return ensure_helm()


@pytest.fixture
def namespaces(node_cluster: NodeCluster) -> Iterator[tuple[str, str]]:
    """(the release's namespace, enforcing PodSecurity restricted; the agents' namespace),
    both made before the operator starts (kopf lists namespaces once at start)."""
    suffix = uuid.uuid4().hex[:6]
    release = make_namespace(
        node_cluster, f"mesh-{suffix}", {"pod-security.kubernetes.io/enforce": "restricted"}
    )
    agents = make_namespace(node_cluster, f"agents-{suffix}")
    yield release, agents
    for name in (agents, release):
        node_cluster.core.delete_namespace(name, propagation_policy="Background")


def test_helm_install_upgrade_and_uninstall_on_the_node(
    node_cluster: NodeCluster, helm: Path, namespaces: tuple[str, str]
) -> None:
    release, agents = namespaces
    repository, tag = node_cluster.image.rsplit(":", 1)
    values = [
        "--set",
        f"image.repository={repository},image.tag={tag},image.pullPolicy=Never",
        "--set",
        f"watchNamespaces={{{agents}}}",
    ]
    run_helm(helm, node_cluster, "install", "mesh", str(CHART), "-n", release, *values)
    try:
        first = wait_operator_ready(node_cluster, release)
        assert crds_established(node_cluster)
        configuration = f"mesh-agent-mesh.{release}.agentmesh.io"
        admission = client.AdmissionregistrationV1Api(node_cluster.api)
        webhooks = admission.read_validating_webhook_configuration(configuration).webhooks
        assert all(w.client_config.ca_bundle for w in webhooks)
        assert_webhook_called(node_cluster, agents, release)
        mesh_url = f"https://mesh-agent-mesh.{release}.svc:8090"
        run_agent_and_task(node_cluster, agents, release, mesh_url)

        run_helm(
            helm, node_cluster, "upgrade", "mesh", str(CHART), "-n", release, *values,
            "--set", "logLevel=debug,podAnnotations.upgraded=yes",
        )  # fmt: skip
        wait_operator_ready(node_cluster, release, previous=first)
        assert_webhook_called(node_cluster, agents, release)
        run_agent_and_task(node_cluster, agents, release, mesh_url)
    finally:
        run_helm(helm, node_cluster, "uninstall", "mesh", "-n", release)

    apps = client.AppsV1Api(node_cluster.api)
    rbac = client.RbacAuthorizationV1Api(node_cluster.api)
    wait_for(
        "the release's objects to be gone",
        lambda: (
            not any(
                exists(read)
                for read in (
                    lambda: apps.read_namespaced_deployment("mesh-agent-mesh", release),
                    lambda: node_cluster.core.read_namespaced_service("mesh-agent-mesh", release),
                    lambda: admission.read_validating_webhook_configuration(configuration),
                    lambda: rbac.read_cluster_role(f"mesh-agent-mesh-{release}-cluster"),
                    lambda: rbac.read_namespaced_role(f"mesh-agent-mesh-{release}-watched", agents),
                )
            )
        ),
        timeout=60,
    )
    wait_for("the operator pod to go", lambda: operator_pod(node_cluster, release) is None, 60)
    assert crds_established(node_cluster), "helm uninstall must keep the CRDs"
    delete_custom_resources(node_cluster, agents)


@pytest.fixture
def image_as_released(node_cluster: NodeCluster, node_holder: NodeHolder) -> Iterator[str]:
    """The node's project image also under the name config/ uses (agent-mesh:<version>,
    docker.io/library/ as containerd spells it): no registry exists to pull it from."""
    import tomllib

    from agent_mesh.devcluster import containerd

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    released = f"docker.io/library/agent-mesh:{version}"
    node = node_holder.node
    ctr = [
        str(node.node_binaries.ctr),
        "--address",
        str(containerd.socket(node.directory / "containerd")),
        "--namespace",
        containerd.NAMESPACE,
        "images",
    ]
    subprocess.run([*ctr, "rm", released], capture_output=True, check=False)
    tagged = subprocess.run(
        [*ctr, "tag", node_cluster.image, released], capture_output=True, text=True, check=False
    )
    assert tagged.returncode == 0, tagged.stderr
    yield released
    subprocess.run([*ctr, "rm", released], capture_output=True, check=False)


def test_kubectl_apply_k_config_default_on_the_node(
    node_cluster: NodeCluster, image_as_released: str
) -> None:
    release = "agent-mesh-system"
    agents = make_namespace(node_cluster, f"agents-{uuid.uuid4().hex[:6]}")
    config = str(ROOT / "config" / "default")
    try:
        applied = node_cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-k", config, check=False
        )
        assert applied.returncode == 0, applied.stderr
        wait_operator_ready(node_cluster, release)
        assert crds_established(node_cluster)
        assert_webhook_called(node_cluster, agents, release)
        run_agent_and_task(node_cluster, agents, release, f"https://agent-mesh.{release}.svc:8090")
        # what `kubectl delete -k` takes with it (the CRDs) takes the custom resources too;
        # remove them first, while the operator runs, as a user would
        delete_custom_resources(node_cluster, agents)
    finally:
        deleted = node_cluster.kubectl(
            "delete", "-k", config, "--ignore-not-found", "--wait=false", check=False
        )
        node_cluster.core.delete_namespace(agents, propagation_policy="Background")
    assert deleted.returncode == 0, deleted.stderr
    admission = client.AdmissionregistrationV1Api(node_cluster.api)
    wait_for(
        "config/default's objects to be gone",
        lambda: (
            not exists(
                lambda: admission.read_validating_webhook_configuration(
                    f"agent-mesh.{release}.agentmesh.io"
                )
            )
            and not exists(lambda: node_cluster.core.read_namespace(release))
        ),
        timeout=120,
    )
