"""Shared fixtures: markers by folder, and the cluster every integration/e2e test uses.

One control plane per test session (built from Go modules on first use, then cached), or
the cluster in $KUBECONFIG when it is set; one operator for the session. Each test gets a
namespace of its own. What the fixtures are built of is in tests/support/; what a run
reports beyond pass and fail (time per tier, a failing test's logs) in tests/support/reporting.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from agent_mesh.testing import OperatorProcess
from tests.support.cluster import Cluster, install_crds
from tests.support.namespaces import fresh_namespace
from tests.support.operators import start_operator
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ("tests.support.reporting",)


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


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test, matched by the session operator's namespace pattern."""
    with fresh_namespace(cluster) as name:
        yield name


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
    proc.stop()
