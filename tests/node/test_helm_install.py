"""The chart on the local node, the way a user installs it: `helm install` runs the
operator as a pod (admitted under PodSecurity `restricted`) that the apiserver calls for
admission through its Service, an agent pod of the project's image exchanges its projected
ServiceAccount token and completes a task; `helm upgrade` and `helm uninstall` leave the
cluster as they should. Then the same with `kubectl apply -k config/default`."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import ROOT, wait_for
from tests.meshhelpers import GROUP, VERSION, apply_agent
from tests.node.conftest import NodeCluster, NodeHolder, echo_agent_pod, pod_phase

CHART = ROOT / "charts" / "agent-mesh"
CRDS = ("meshagents", "meshtasks", "aclpolicies")
# the example agent as the project's image ships it (package data of agent_mesh)
RUN_ECHO_WORKER = (
    "import pathlib, runpy, agent_mesh; runpy.run_path(str(pathlib.Path(agent_mesh.__file__)"
    ".parent / 'examples' / 'echo_worker.py'), run_name='__main__')"
)


@pytest.fixture(scope="module")
def helm() -> Path:
    from agent_mesh.devcluster.binaries import ensure_helm

    return ensure_helm()


def _namespace(cluster: NodeCluster, name: str, labels: dict[str, str] | None = None) -> str:
    cluster.core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    wait_for(
        f"the default ServiceAccount of {name}",
        lambda: _exists(lambda: cluster.core.read_namespaced_service_account("default", name)),
    )
    return name


@pytest.fixture
def namespaces(node_cluster: NodeCluster) -> Iterator[tuple[str, str]]:
    """(the release's namespace, enforcing PodSecurity restricted; the agents' namespace),
    both made before the operator starts (kopf lists namespaces once at start)."""
    suffix = uuid.uuid4().hex[:6]
    release = _namespace(
        node_cluster, f"mesh-{suffix}", {"pod-security.kubernetes.io/enforce": "restricted"}
    )
    agents = _namespace(node_cluster, f"agents-{suffix}")
    yield release, agents
    for name in (agents, release):
        node_cluster.core.delete_namespace(name, propagation_policy="Background")


def _helm(helm: Path, cluster: NodeCluster, *args: str) -> str:
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


def _exists(read: Any) -> bool:
    try:
        read()
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def _operator_pod(cluster: NodeCluster, namespace: str) -> Any:
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/component=operator"
    ).items
    return pods[0] if len(pods) == 1 else None


def _operator_logs(cluster: NodeCluster, namespace: str) -> str:
    pod = _operator_pod(cluster, namespace)
    if pod is None:
        return "(no single operator pod)"
    proc = cluster.kubectl("logs", "-n", namespace, pod.metadata.name, "--tail=60", check=False)
    return proc.stdout + proc.stderr


@contextlib.contextmanager
def _operator_log_on_failure(cluster: NodeCluster, namespace: str) -> Iterator[None]:
    try:
        yield
    except pytest.fail.Exception as failed:
        logs = _operator_logs(cluster, namespace)
        pytest.fail(f"{failed}\n--- the operator pod's log, last lines:\n{logs[-5000:]}")


def _wait_operator_ready(cluster: NodeCluster, namespace: str, previous: str | None = None) -> str:
    """The name of the operator pod once it is Ready (a new one when `previous` is given)."""

    def ready() -> str | None:
        pod = _operator_pod(cluster, namespace)
        if pod is None or pod.metadata.name == previous or pod.metadata.deletion_timestamp:
            return None
        conditions = {c.type: c.status for c in (pod.status.conditions or [])}
        return str(pod.metadata.name) if conditions.get("Ready") == "True" else None

    with _operator_log_on_failure(cluster, namespace):
        name: str = wait_for("the operator pod to be Ready", ready, timeout=180, interval=0.5)
    return name


def _crds_established(cluster: NodeCluster) -> bool:
    ext = client.ApiextensionsV1Api(cluster.api)
    for plural in CRDS:
        conditions = ext.read_custom_resource_definition(f"{plural}.{GROUP}").status.conditions
        if not any(c.type == "Established" and c.status == "True" for c in conditions or []):
            return False
    return True


def _oversized_task_refusal(cluster: NodeCluster, namespace: str) -> str | None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MeshTask",
        "metadata": {"name": f"big-{uuid.uuid4().hex[:6]}"},
        "spec": {"taskType": "echo", "payload": {"text": "x" * (300 * 1024)}},
    }
    try:
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "meshtasks", body)
    except client.ApiException as error:
        return f"{error.status} {json.loads(error.body or '{}').get('message', '')}"
    cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshtasks", body["metadata"]["name"]
    )
    return None


def _assert_webhook_called(cluster: NodeCluster, agents: str, release: str) -> None:
    """The apiserver calls the webhook through its Service, trusting the injected CA."""
    with _operator_log_on_failure(cluster, release):
        refusal = wait_for(
            "the webhook to refuse an oversized MeshTask (not a failed call: the Service "
            "routes to a new pod a moment after it is Ready)",
            lambda: _webhook_refusal(cluster, agents),
            timeout=60,
            interval=0.5,
        )
    assert "spec.payload" in refusal, refusal


def _webhook_refusal(cluster: NodeCluster, namespace: str) -> str | None:
    """The webhook's own refusal (422) of an oversized MeshTask, or None."""
    refusal = _oversized_task_refusal(cluster, namespace)
    return refusal if refusal is not None and refusal.startswith("422") else None


def _run_agent_and_task(
    cluster: NodeCluster, agents: str, release: str, mesh_url: str, within: float = 180
) -> str:
    """An echo agent pod from the project's image joins through token exchange and
    completes a MeshTask created with kubectl (each step within `within` seconds); the
    task's name."""
    core = cluster.core
    if not _exists(lambda: core.read_namespaced_service_account("echo", agents)):
        core.create_namespaced_service_account(agents, {"metadata": {"name": "echo"}})
        apply_agent(
            cluster, agents, "echo", "worker", capabilities=["echo"], serviceAccountName="echo"
        )
    with _operator_log_on_failure(cluster, release):
        wait_for(
            "the operator's CA bundle in the agents' namespace",
            lambda: _exists(lambda: core.read_namespaced_config_map("agent-mesh-ca.crt", agents)),
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
    cluster.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        agents,
        "meshtasks",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MeshTask",
            "metadata": {"name": task},
            "spec": {"taskType": "echo", "requiredCapabilities": ["echo"], "payload": {"x": 1}},
        },
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

    with _operator_log_on_failure(cluster, release):
        status = wait_for("the MeshTask to finish", finished, timeout=within, interval=0.5)
    assert (status["phase"], status["result"], status["agentId"]) == ("Completed", {"x": 1}, "echo")
    return task


def _custom_resources(cluster: NodeCluster, namespace: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for plural in CRDS:
        listing = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        found += listing["items"]
    return found


def _delete_custom_resources(cluster: NodeCluster, namespace: str) -> None:
    """With no operator running, every custom resource goes: none waits on a finalizer."""
    assert not [
        (o["kind"], o["metadata"]["name"], o["metadata"]["finalizers"])
        for o in _custom_resources(cluster, namespace)
        if o["metadata"].get("finalizers")
    ]
    for plural in CRDS:
        cluster.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, plural)
    wait_for("the custom resources to be gone", lambda: not _custom_resources(cluster, namespace))


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
    _helm(helm, node_cluster, "install", "mesh", str(CHART), "-n", release, *values)
    try:
        first = _wait_operator_ready(node_cluster, release)
        assert _crds_established(node_cluster)
        configuration = f"mesh-agent-mesh.{release}.agentmesh.io"
        admission = client.AdmissionregistrationV1Api(node_cluster.api)
        webhooks = admission.read_validating_webhook_configuration(configuration).webhooks
        assert all(w.client_config.ca_bundle for w in webhooks)
        _assert_webhook_called(node_cluster, agents, release)
        mesh_url = f"https://mesh-agent-mesh.{release}.svc:8090"
        _run_agent_and_task(node_cluster, agents, release, mesh_url)

        _helm(
            helm, node_cluster, "upgrade", "mesh", str(CHART), "-n", release, *values,
            "--set", "logLevel=debug,podAnnotations.upgraded=yes",
        )  # fmt: skip
        _wait_operator_ready(node_cluster, release, previous=first)
        _assert_webhook_called(node_cluster, agents, release)
        _run_agent_and_task(node_cluster, agents, release, mesh_url)
    finally:
        _helm(helm, node_cluster, "uninstall", "mesh", "-n", release)

    apps = client.AppsV1Api(node_cluster.api)
    rbac = client.RbacAuthorizationV1Api(node_cluster.api)
    wait_for(
        "the release's objects to be gone",
        lambda: (
            not any(
                _exists(read)
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
    wait_for("the operator pod to go", lambda: _operator_pod(node_cluster, release) is None, 60)
    assert _crds_established(node_cluster), "helm uninstall must keep the CRDs"
    _delete_custom_resources(node_cluster, agents)


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
    agents = _namespace(node_cluster, f"agents-{uuid.uuid4().hex[:6]}")
    config = str(ROOT / "config" / "default")
    try:
        applied = node_cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-k", config, check=False
        )
        assert applied.returncode == 0, applied.stderr
        _wait_operator_ready(node_cluster, release)
        assert _crds_established(node_cluster)
        _assert_webhook_called(node_cluster, agents, release)
        _run_agent_and_task(node_cluster, agents, release, f"https://agent-mesh.{release}.svc:8090")
        # what `kubectl delete -k` takes with it (the CRDs) takes the custom resources too;
        # remove them first, while the operator runs, as a user would
        _delete_custom_resources(node_cluster, agents)
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
            not _exists(
                lambda: admission.read_validating_webhook_configuration(
                    f"agent-mesh.{release}.agentmesh.io"
                )
            )
            and not _exists(lambda: node_cluster.core.read_namespace(release))
        ),
        timeout=120,
    )
