"""Shared fixtures: markers by folder, and the cluster every integration/e2e test uses.

One control plane per test session (built from Go modules on first use, then cached), or
the cluster in $KUBECONFIG when it is set. Each test gets a namespace of its own.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
SESSION = uuid.uuid4().hex[:6]
TEST_NAMESPACE_PREFIX = f"amt-{SESSION}-"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        suite = Path(str(item.fspath)).relative_to(ROOT / "tests").parts[0]
        if suite in ("unit", "integration", "e2e", "packaging", "node"):
            item.add_marker(getattr(pytest.mark, suite))
    # The node's lifecycle tests take the machine's one node down: they run last.
    items.sort(key=lambda item: item.get_closest_marker("node_lifecycle") is not None)


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1
) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


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
    name = f"{TEST_NAMESPACE_PREFIX}{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(cluster.api)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    # Without kube-controller-manager a namespace stays Terminating; that is harmless here.
    core.delete_namespace(name, propagation_policy="Background")


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    log: Path
    liveness_port: int
    mesh_port: int
    operator_namespace: str
    ca_file: Path | None = None
    """The operator's CA bundle (from its ConfigMap), which verifies the mesh API; None
    when the mesh API serves plain http (--no-mesh-tls)."""
    mesh_host: str = "127.0.0.1"

    @property
    def mesh_url(self) -> str:
        scheme = "https" if self.ca_file is not None else "http"
        return f"{scheme}://{self.mesh_host}:{self.mesh_port}"

    @functools.cached_property
    def tls(self) -> ssl.SSLContext:
        """Verifies the mesh API (httpx `verify=`, urllib `context=`); without TLS it is
        simply never used."""
        if self.ca_file is None:
            return ssl.create_default_context()
        return ssl.create_default_context(cafile=str(self.ca_file))

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


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
    from agent_mesh.devcluster.ports import free_port
    from agent_mesh.devcluster.processes import spawn

    liveness = free_port()
    mesh = mesh_port or free_port()
    ensure_namespace(cluster, operator_namespace)
    argv = [
        sys.executable,
        "-m",
        "agent_mesh",
        "operator",
        "--namespace",
        watch,
        "--liveness-port",
        str(liveness),
        "--webhook-port",
        str(free_port()),
        "--mesh-port",
        str(mesh),
        "--operator-namespace",
        operator_namespace,
        "--mesh-host",
        mesh_host,
        *extra,
        *([] if mesh_tls else ["--no-mesh-tls"]),
    ]
    # agents and callbacks of tests listen on 127.0.0.1: loopback egress on unless a test says
    env = {**cluster.env, "AGENT_MESH_EGRESS_ALLOW_LOOPBACK": "true", **(extra_env or {})}
    proc = spawn(argv, log, detached=False, env=env)  # dies with the test run
    ca_file = log.with_name(f"{log.stem}-ca.crt") if mesh_tls else None
    operator = OperatorProcess(proc, log, liveness, mesh, operator_namespace, ca_file, mesh_host)

    def answers(url: str, context: ssl.SSLContext | None = None) -> bool:
        if proc.poll() is not None:
            pytest.fail(f"operator exited with {proc.returncode}:\n{operator.logs()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def mesh_ready() -> bool:
        if ca_file is None:
            return answers(f"{operator.mesh_url}/readyz")
        bundle = mesh_ca_bundle(cluster, operator_namespace)  # re-read: it may be stale
        if bundle is None:
            return False
        ca_file.write_text(bundle)
        context = ssl.create_default_context(cafile=str(ca_file))
        return answers(f"{operator.mesh_url}/readyz", context)

    liveness_url = f"http://127.0.0.1:{liveness}/healthz"
    wait_for("the operator's liveness endpoint", lambda: answers(liveness_url), timeout=60)
    wait_for("the operator's mesh API to be ready", mesh_ready, timeout=60)
    return operator


def mesh_ca_bundle(cluster: Cluster, namespace: str) -> str | None:
    """The CA bundle the operator published in `namespace` (ConfigMap agent-mesh-ca.crt)."""
    from agent_mesh.pki import CA_BUNDLE_CONFIGMAP, CA_BUNDLE_KEY

    try:
        found = client.CoreV1Api(cluster.api).read_namespaced_config_map(
            CA_BUNDLE_CONFIGMAP, namespace
        )
    except client.ApiException:
        return None
    return (found.data or {}).get(CA_BUNDLE_KEY) or None


def stop_operator(operator: OperatorProcess) -> None:
    from agent_mesh.devcluster.processes import terminate

    terminate(operator.process.pid, child=operator.process)


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
