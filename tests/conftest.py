"""Shared fixtures: markers by folder, and the cluster every integration/e2e test uses.

One control plane per test session (built from Go modules on first use, then cached), or
the cluster in $KUBECONFIG when it is set. Each test gets a namespace of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from agent_mesh import testing
from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.testing import AgentProcess, OperatorProcess

ROOT = Path(__file__).resolve().parents[1]
SESSION = uuid.uuid4().hex[:6]
TEST_NAMESPACE_PREFIX = f"amt-{SESSION}-"
TIERS = ("unit", "integration", "e2e", "packaging", "node")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "tier_budget_seconds",
        "seconds each tier may take in one run, one `<tier> = <seconds>` a line; a run "
        "says loudly which tiers went over",
        type="linelist",
        default=[],
    )


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


# --- what a run reports: time per tier against its budget, logs of a failing test -------

_tier_seconds: dict[str, float] = {}
_tier_tests: dict[str, int] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    tier = next((t for t in TIERS if t in report.keywords), None)
    if tier is None:
        return
    _tier_seconds[tier] = _tier_seconds.get(tier, 0.0) + report.duration
    if report.when == "call" or (report.when == "setup" and report.skipped):
        _tier_tests[tier] = _tier_tests.get(tier, 0) + 1


def tier_budgets(config: pytest.Config) -> dict[str, float]:
    """`tier_budget_seconds` from pyproject: {tier: seconds}; a bad line names itself."""
    budgets = {}
    for line in config.getini("tier_budget_seconds"):
        tier, _, seconds = line.partition("=")
        tier = tier.strip()
        if tier not in TIERS or not seconds.strip().replace(".", "", 1).isdigit():
            raise pytest.UsageError(
                f"tier_budget_seconds: {line!r} must read `<tier> = <seconds>` with a tier "
                f"of {', '.join(TIERS)}"
            )
        budgets[tier] = float(seconds)
    return budgets


@pytest.hookimpl(trylast=True)  # after --durations: the last word of a run
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Each tier's total time (setup, call and teardown of its tests) against its budget;
    a tier over its budget is named in red, so a slow suite cannot creep in unseen."""
    if not _tier_seconds:
        return
    budgets = tier_budgets(config)
    terminalreporter.section("time per tier")
    over = []
    for tier in TIERS:
        if tier not in _tier_seconds:
            continue
        spent, budget = _tier_seconds[tier], budgets.get(tier)
        line = f"{tier:<12} {spent:8.1f} s  {_tier_tests.get(tier, 0):4d} tests"
        if budget is None:
            terminalreporter.write_line(f"{line}  (no budget)")
        elif spent > budget:
            over.append(tier)
            terminalreporter.write_line(
                f"{line}  OVER BUDGET: {spent:.0f} s of {budget:.0f} s", red=True, bold=True
            )
        else:
            terminalreporter.write_line(f"{line}  of {budget:.0f} s budget")
    if over:
        terminalreporter.write_line(
            f"!!! {len(over)} tier(s) over their time budget: {', '.join(over)} "
            "(tier_budget_seconds in pyproject.toml) !!!",
            red=True,
            bold=True,
        )


LOG_TAIL_CHARS = 20_000
"""How much of each process's log a failure report carries (its end: the failure)."""


def processes_in(*roots: object) -> list[OperatorProcess | AgentProcess]:
    """The operator and agent processes reachable from `roots` (a fixture's value, a
    frame's locals): directly, in dicts, lists, tuples or a dataclass's fields (a
    fleet's), two levels down; each once."""
    found: dict[int, OperatorProcess | AgentProcess] = {}

    def visit(value: object, depth: int) -> None:
        if isinstance(value, OperatorProcess | AgentProcess):
            found.setdefault(id(value), value)
        elif depth == 0:
            return
        elif isinstance(value, dict):
            for inner in list(value.values()):
                visit(inner, depth - 1)
        elif isinstance(value, list | tuple | set | frozenset):
            for inner in list(value):
                visit(inner, depth - 1)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for field in dataclasses.fields(value):
                visit(getattr(value, field.name, None), depth - 1)

    for root in roots:
        visit(root, 3)
    return list(found.values())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's report carries the logs of the operators and agents it ran: the
    ones its fixtures hold and the ones its own code started (the locals of the frames
    the failure passed through), so a failure on a loaded machine can be read afterwards."""
    report = yield
    if not report.failed:
        return report
    roots: list[object] = list(getattr(item, "funcargs", {}).values())
    if call.excinfo is not None:
        roots.extend(entry.frame.f_locals for entry in call.excinfo.traceback)
    for process in processes_in(*roots):
        what = "operator" if isinstance(process, OperatorProcess) else f"agent {process.agent_id}"
        try:
            text = process.logs()
        except OSError as exc:
            text = f"(log unreadable: {exc})"
        if len(text) > LOG_TAIL_CHARS:
            text = f"... ({len(text) - LOG_TAIL_CHARS} characters before)\n{text[-LOG_TAIL_CHARS:]}"
        report.sections.append((f"{what} log (pid {process.pid}, {process.log.name})", text))
    return report
