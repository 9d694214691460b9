"""Shared fixtures: markers by folder, and the cluster every integration/e2e test uses.

One control plane per test session (built from Go modules on first use, then cached), or
the cluster in $KUBECONFIG when it is set. Each test gets a namespace of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from agent_mesh import testing
from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.testing import OperatorProcess

ROOT = Path(__file__).resolve().parents[1]
SESSION = uuid.uuid4().hex[:6]
TEST_NAMESPACE_PREFIX = f"amt-{SESSION}-"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        suite = Path(str(item.fspath)).relative_to(ROOT / "tests").parts[0]
        if suite in ("unit", "integration", "e2e", "packaging", "node", "helm"):
            item.add_marker(getattr(pytest.mark, suite))
        # a fault is disruptive: `-m disruptive` selects every fault class, `-m "not
        # disruptive"` none of them
        if any(m.name.startswith("fault_") for m in item.iter_markers()):
            item.add_marker(pytest.mark.disruptive)
    # The node's lifecycle tests take the machine's one node down: they run last.
    items.sort(key=lambda item: item.get_closest_marker("node_lifecycle") is not None)


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1
) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    try:
        return testing.wait_until(what, check, timeout, interval)
    except testing.HarnessError as exc:
        pytest.fail(str(exc))


@dataclass
class Cluster:
    """A reachable cluster: its kubeconfig, a kubectl for it and a Python API client."""

    kubeconfig: Path
    kubectl_binary: str
    api: client.ApiClient
    local: bool

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl_binary, *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    # agent_mesh.testing.Kube: what the harness reads and writes, by this client

    def read_meshagent(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read(
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "meshagents", name
            )
        )

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        core = client.CoreV1Api(self.api)
        return self._read(lambda: core.read_namespaced_secret(name, namespace).data or {})

    def read_config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        core = client.CoreV1Api(self.api)
        return self._read(lambda: core.read_namespaced_config_map(name, namespace).data or {})

    def write_meshagent(self, manifest: dict[str, Any]) -> None:
        namespace = manifest["metadata"]["namespace"]
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "meshagents", manifest
        )

    @staticmethod
    def _read(read: Callable[[], Any]) -> Any:
        try:
            return read()
        except client.ApiException:
            return None


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    given = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if given:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            pytest.fail("KUBECONFIG is set but no kubectl is on PATH")
        yield Cluster(Path(given), kubectl, config.new_client_from_config(given), local=False)
        return
    from agent_mesh.devcluster import ControlPlane, ensure_binaries

    binaries = ensure_binaries()
    with ControlPlane(binaries, tmp_path_factory.mktemp("plane")) as plane:
        api = config.new_client_from_config(str(plane.kubeconfig))
        yield Cluster(plane.kubeconfig, str(binaries.kubectl), api, local=True)
        api.close()


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> list[dict[str, Any]]:
    """The CRDs generated from the models, applied and Established."""
    return install_crds(cluster)


def install_crds(cluster: Cluster) -> list[dict[str, Any]]:
    """Apply the CRDs generated from the models; return once they serve lists."""
    from agent_mesh.api.crdgen import crd_objects

    objects = crd_objects()
    ext = client.ApiextensionsV1Api(cluster.api)
    for crd in objects:
        name = crd["metadata"]["name"]
        try:
            current = ext.read_custom_resource_definition(name)
            crd = {
                **crd,
                "metadata": {
                    **crd["metadata"],
                    "resourceVersion": current.metadata.resource_version,
                },
            }
            ext.replace_custom_resource_definition(name, crd)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            ext.create_custom_resource_definition(crd)

    def established(name: str) -> bool:
        conds = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conds)

    def servable(plural: str) -> bool:
        # Established can come before the storage serves lists ("storage is (re)initializing",
        # 429): an operator starting then backs off for seconds. Wait for a real list.
        try:
            cluster.custom.list_cluster_custom_object("agentmesh.io", "v1alpha1", plural, limit=1)
        except client.ApiException:
            return False
        return True

    for crd in objects:
        wait_for(
            f"CRD {crd['metadata']['name']} to be Established",
            lambda n=crd["metadata"]["name"]: established(n),
        )
        wait_for(
            f"CRD {crd['metadata']['name']} to serve lists",
            lambda p=crd["spec"]["names"]["plural"]: servable(p),
        )
    return objects


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test, matched by the session operator's namespace pattern."""
    with temporary_namespace(cluster, f"{TEST_NAMESPACE_PREFIX}{uuid.uuid4().hex[:8]}") as name:
        yield name


@contextlib.contextmanager
def temporary_namespace(cluster: Cluster, name: str) -> Iterator[str]:
    """Namespace `name` (it may exist already), deleted when the block ends."""
    ensure_namespace(cluster, name)
    try:
        yield name
    finally:
        # Without kube-controller-manager a namespace stays Terminating; harmless here.
        client.CoreV1Api(cluster.api).delete_namespace(name, propagation_policy="Background")


def ensure_namespace(cluster: Cluster, name: str) -> str:
    try:
        client.CoreV1Api(cluster.api).create_namespace({"metadata": {"name": name}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    return name


def start_operator(
    cluster: Cluster,
    log: Path,
    *extra: str,
    watch: str = f"{TEST_NAMESPACE_PREFIX}*",
    operator_namespace: str = f"amt-{SESSION}-system",
    mesh_port: int | None = None,
    extra_env: dict[str, str] | None = None,
    mesh_tls: bool = True,
    mesh_host: str = "127.0.0.1",
) -> OperatorProcess:
    """An operator process watching `watch`, with its keys in `operator_namespace`. Its
    mesh API serves https (unless `mesh_tls` is False), verified with the CA bundle the
    operator publishes in `operator_namespace`, as any client would get it."""
    ensure_namespace(cluster, operator_namespace)
    return testing.start_operator(
        cluster,
        cluster.kubeconfig,
        log,
        *extra,
        watch=watch,
        operator_namespace=operator_namespace,
        mesh_port=mesh_port,
        extra_env=extra_env,
        mesh_tls=mesh_tls,
        mesh_host=mesh_host,
    )


def stop_operator(operator: OperatorProcess) -> None:
    operator.stop()


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, crds: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator process for the session, watching the test namespaces."""
    proc = start_operator(cluster, tmp_path_factory.mktemp("operator") / "operator.log")
    admission = client.AdmissionregistrationV1Api(cluster.api)

    def webhook_registered() -> bool:
        try:
            admission.read_validating_webhook_configuration("agentmesh.io")
        except client.ApiException:
            return False
        return True

    wait_for("the operator to register its admission webhook", webhook_registered)
    yield proc
    stop_operator(proc)


async def wait_for_async(
    what: str, check: Callable[[], Any], within: float = 30.0, interval: float = 0.1
) -> Any:
    """`wait_for` for async tests: the loop runs between polls; `check` may be async."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while loop.time() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    pytest.fail(f"timed out after {within:.0f} s waiting for {what} (last: {last!r})")
