"""The RBAC proof: the chart's roles are no wider than the operator needs. The chart is
installed with watchNamespaces (so every rule is in one of three roles: the cluster role,
the operator's own-namespace role, the watched namespace's role); then each rule in turn
is removed, the operator restarted, and the user's flow must break at the step that needs
the rule. The flow as a whole, with every rule, is tests/node/test_helm_install.py.

Slow (an operator restart per rule): run with `make test-rbac-proof`
(AGENT_MESH_RBAC_PROOF=1). A rule the flow does not exercise is listed in UNEXERCISED with
the reason it stays; the test shows the flow passes without it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.testing.demo_chart import AGENT_PORT, agent_workload
from tests.node.chart_flow import (
    CHART,
    exists,
    make_namespace,
    operator_logs,
    operator_pod,
    oversized_task_refusal,
    run_agent_and_task,
    run_helm,
    webhook_refusal,
)
from tests.node.conftest import NodeCluster
from tests.support.mesh_api import apply_agent
from tests.support.tasks import create_task
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.rbac_proof,
    pytest.mark.skipif(
        os.environ.get("AGENT_MESH_RBAC_PROOF") != "1",
        reason="the RBAC proof restarts the operator once per rule: make test-rbac-proof",
    ),
]

RELEASE = "mesh"
FULLNAME = "mesh-agent-mesh"


@dataclass(frozen=True)
class Rule:
    role: str  # "cluster", "own" or "watched"
    index: int
    what: str


# In the order of charts/agent-mesh/templates/rbac.yaml (a test checks the count).
RULES = [
    Rule("cluster", 0, "customresourcedefinitions get list watch"),
    Rule("cluster", 1, "namespaces list watch"),
    Rule("cluster", 2, "servicecidrs list"),
    Rule("cluster", 3, "validating-, mutatingwebhookconfigurations get update (by name)"),
    Rule("own", 0, "secrets, configmaps create"),
    Rule("own", 1, "secrets get update (signing keys, CA)"),
    Rule("own", 2, "configmaps get update (revocations, CA bundle)"),
    Rule("watched", 0, "meshagents, meshtasks, aclpolicies get list watch patch"),
    Rule("watched", 1, "meshtasks create delete"),
    Rule("watched", 2, "*/status patch"),
    Rule("watched", 3, "events create patch"),
    Rule("watched", 4, "pods get"),
    Rule("watched", 5, "secrets create get update"),
    Rule("watched", 6, "configmaps create"),
    Rule("watched", 7, "configmaps get update (CA bundle)"),
    Rule("watched", 8, "statefulsets list watch create patch"),
    Rule("watched", 9, "services, serviceaccounts list watch create patch"),
    Rule("watched", 10, "secrets, configmaps list watch patch deletecollection"),
    Rule("watched", 11, "pods list watch"),
    Rule("watched", 12, "roles, rolebindings list watch create patch deletecollection"),
    Rule("watched", 13, "events get"),
]
_TAILNET_ONLY = (
    "; the proof's managed agent is a direct one (the proof starts no tailnet), and "
    "tests/integration/test_managed_agent_children.py covers the tailscale children against "
    "the apiserver"
)
UNEXERCISED = {
    "customresourcedefinitions get list watch": "kopf notices CRDs installed after it "
    "started (refused: a warning, and a restart after installing CRDs late)",
    "servicecidrs list": "the egress policy learns the Service ranges (without it: a "
    "warning, and only AGENT_MESH_EGRESS_SERVICE_CIDRS protects them)",
    "pods list watch": "the watch of managed agents' pods serves only tailscale agents (the "
    "sidecar's container state is their TailnetConnected, controllers/tailnet.py)" + _TAILNET_ONLY,
    "events get": "only a tailscale agent's sidecar Role grants get on Events, and a Role "
    "may grant only what its creator holds" + _TAILNET_ONLY,
}


@dataclass
class Installed:
    cluster: NodeCluster
    release: str
    agents: str

    @property
    def mesh_url(self) -> str:
        return f"https://{FULLNAME}.{self.release}.svc:8090"

    def role(self, which: str) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
        """(read, replace) of one of the three roles."""
        rbac = client.RbacAuthorizationV1Api(self.cluster.api)
        if which == "cluster":
            name = f"{FULLNAME}-{self.release}-cluster"
            return (
                lambda: rbac.read_cluster_role(name),
                lambda body: rbac.replace_cluster_role(name, body),
            )
        namespace = self.release if which == "own" else self.agents
        name = f"{FULLNAME}-own" if which == "own" else f"{FULLNAME}-{self.release}-watched"
        return (
            lambda: rbac.read_namespaced_role(name, namespace),
            lambda body: rbac.replace_namespaced_role(name, namespace, body),
        )


@pytest.fixture(scope="module")
def installed(node_cluster: NodeCluster) -> Iterator[Installed]:
    from agent_mesh.devcluster.binaries import ensure_helm

    helm: Path = ensure_helm()
    suffix = uuid.uuid4().hex[:6]
    release = make_namespace(
        node_cluster, f"proof-{suffix}", {"pod-security.kubernetes.io/enforce": "restricted"}
    )
    agents = make_namespace(node_cluster, f"proof-agents-{suffix}")
    repository, tag = node_cluster.image.rsplit(":", 1)
    run_helm(
        helm, node_cluster, "install", RELEASE, str(CHART), "-n", release,
        "--set", f"image.repository={repository},image.tag={tag},image.pullPolicy=Never",
        "--set", f"watchNamespaces={{{agents}}}",
        "--set", "livenessProbe.initialDelaySeconds=5,readinessProbe.periodSeconds=2",
    )  # fmt: skip
    yield Installed(node_cluster, release, agents)
    run_helm(helm, node_cluster, "uninstall", RELEASE, "-n", release)
    for name in (agents, release):
        node_cluster.core.delete_namespace(name, propagation_policy="Background")


def _restart_operator(installed: Installed, timeout: float) -> str | None:
    """Delete the operator pod; None once a new one is Ready, else why not."""
    cluster = installed.cluster
    old = operator_pod(cluster, installed.release)
    if old is not None:
        cluster.core.delete_namespaced_pod(
            old.metadata.name, installed.release, grace_period_seconds=1
        )

    def ready() -> bool:
        pod = operator_pod(cluster, installed.release)
        if pod is None or (old is not None and pod.metadata.name == old.metadata.name):
            return False
        conditions = {c.type: c.status for c in (pod.status.conditions or [])}
        return conditions.get("Ready") == "True"

    try:
        wait_for("the operator pod to be Ready", ready, timeout=timeout, interval=0.5)
    except pytest.fail.Exception:
        return "the operator pod never became Ready"
    return None


def _flow(installed: Installed) -> str | None:
    """The user's flow with short deadlines; None when it passes, else the step that broke."""
    cluster, agents = installed.cluster, installed.agents
    # what the operator creates at start is created again, so `create` is exercised too
    core = cluster.core
    for delete in (
        lambda: core.delete_namespaced_secret("agent-mesh-signing-keys", installed.release),
        lambda: core.delete_namespaced_secret("agent-mesh-ca", installed.release),
        lambda: core.delete_namespaced_config_map("agent-mesh-ca.crt", installed.release),
        lambda: core.delete_namespaced_config_map("agent-mesh-ca.crt", agents),
    ):
        with contextlib.suppress(client.ApiException):
            delete()
    if (why := _restart_operator(installed, timeout=60)) is not None:
        return why
    try:
        wait_for("the webhook", lambda: webhook_refusal(cluster, agents), timeout=30)
    except pytest.fail.Exception:
        return f"the webhook never refused: {oversized_task_refusal(cluster, agents)}"
    try:
        task = run_agent_and_task(cluster, agents, installed.release, installed.mesh_url, within=45)
    except pytest.fail.Exception as failed:
        return f"agent and task: {str(failed).splitlines()[0]}"
    external = f"ext-{uuid.uuid4().hex[:4]}"
    apply_agent(cluster, agents, external, "worker", endpoint="http://10.244.0.250:9")
    try:
        wait_for(
            "the external agent's credential Secret",
            lambda: exists(
                lambda: cluster.core.read_namespaced_secret(f"{external}-mesh-credential", agents)
            ),
            timeout=20,
        )
    except pytest.fail.Exception:
        return "no credential Secret for an external agent"
    finally:
        cluster.custom.delete_namespaced_custom_object(
            GROUP, VERSION, agents, "meshagents", external
        )
    about = f"involvedObject.name={task}"
    try:
        wait_for(
            "the task's TaskCompleted Event",
            lambda: any(
                e.reason == "TaskCompleted"
                for e in core.list_namespaced_event(agents, field_selector=about).items
            ),
            timeout=10,
        )
    except pytest.fail.Exception:
        return "no TaskCompleted Event about the task"
    if (why := _managed_agent(installed)) is not None:
        return f"managed agent: {why}"
    return _ttl_cleanup(installed)


def _managed_agent(installed: Installed) -> str | None:
    """A MeshAgent with spec.workload in direct mode, the example echo worker from the
    project's image: the operator applies its ServiceAccount, headless Service and
    StatefulSet (and removes tailnet children it might have had: a deletecollection of
    Roles, RoleBindings, ConfigMaps and Secrets by label), registers it, its pod completes a
    task, and a deleted Service is put back. None when it all happens, else what did not."""
    cluster, agents = installed.cluster, installed.agents
    name = f"mgd-{uuid.uuid4().hex[:4]}"
    workload = agent_workload("echo_worker.py", cluster.image, "Never", installed.release)
    for variable in workload["spec"]["containers"][0]["env"]:
        if variable["name"] == "AGENT_MESH_URL":
            variable["value"] = installed.mesh_url
    apply_agent(
        cluster,
        agents,
        name,
        "worker",
        capabilities=["managed"],
        network="direct",
        port=AGENT_PORT,
        workload=workload,
    )
    core, apps = cluster.core, client.AppsV1Api(cluster.api)
    read = lambda: cluster.custom.get_namespaced_custom_object(  # noqa: E731
        GROUP, VERSION, agents, "meshagents", name
    )
    children = {
        "StatefulSet": lambda: apps.read_namespaced_stateful_set(name, agents),
        "Service": lambda: core.read_namespaced_service(name, agents),
        "ServiceAccount": lambda: core.read_namespaced_service_account(name, agents),
    }
    try:
        try:
            wait_for(
                "it to be registered",
                lambda: (read().get("status") or {}).get("registeredAt"),
                timeout=30,
            )
        except pytest.fail.Exception:
            return "never registered (its children not all applied)"
        for kind, child in children.items():
            try:
                wait_for(f"its {kind}", lambda child=child: exists(child), timeout=15)
            except pytest.fail.Exception:
                conditions = (read().get("status") or {}).get("conditions") or []
                return f"no {kind} {name}: {[c.get('message') for c in conditions]}"
        task = f"mgd-{uuid.uuid4().hex[:6]}"
        create_task(
            cluster, agents, task, taskType="echo", requiredCapabilities=["managed"], payload={}
        )
        done = lambda: cluster.custom.get_namespaced_custom_object(  # noqa: E731
            GROUP, VERSION, agents, "meshtasks", task
        ).get("status", {})
        try:
            wait_for(
                "its task to complete",
                lambda: done().get("phase") == "Completed" and done().get("agentId") == name,
                timeout=90,
            )
        except pytest.fail.Exception:
            return f"its task did not complete: {done()}"
        core.delete_namespaced_service(name, agents)
        try:
            wait_for("its deleted Service to be put back", lambda: exists(children["Service"]), 20)
        except pytest.fail.Exception:
            return "its deleted Service was not put back"
    finally:
        cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, agents, "meshagents", name)
        # the next run starts without it: its children and pod garbage-collected
        with contextlib.suppress(pytest.fail.Exception):
            wait_for(
                "its StatefulSet and pod to be garbage-collected",
                lambda: (
                    not exists(children["StatefulSet"])
                    and not exists(lambda: core.read_namespaced_pod(f"{name}-0", agents))
                ),
                timeout=60,
            )
    return None


def _ttl_cleanup(installed: Installed) -> str | None:
    cluster, agents = installed.cluster, installed.agents
    name = f"ttl-{uuid.uuid4().hex[:4]}"
    create_task(
        cluster,
        agents,
        name,
        taskType="echo",
        requiredCapabilities=["echo"],
        payload={},
        ttlSecondsAfterFinished=1,
    )
    read = lambda: cluster.custom.get_namespaced_custom_object(  # noqa: E731
        GROUP, VERSION, agents, "meshtasks", name
    )
    try:
        wait_for("a finished task past its TTL to be deleted", lambda: not exists(read), 40)
    except pytest.fail.Exception:
        return "a finished task past ttlSecondsAfterFinished was not deleted"
    return None


def test_the_rule_list_matches_the_chart(installed: Installed) -> None:
    for which in ("cluster", "own", "watched"):
        read, _ = installed.role(which)
        assert len(read().rules) == len([r for r in RULES if r.role == which]), which


def test_the_flow_passes_with_every_rule(installed: Installed) -> None:
    assert _flow(installed) is None


@pytest.mark.parametrize("rule", RULES, ids=[f"{r.role}-{r.index}" for r in RULES])
def test_the_flow_breaks_without_the_rule(installed: Installed, rule: Rule) -> None:
    read, replace = installed.role(rule.role)
    original = read()
    reduced = client.ApiClient().sanitize_for_serialization(original)
    removed = reduced["rules"].pop(rule.index)
    replace(reduced)
    try:
        broke = _flow(installed)
    finally:
        current = client.ApiClient().sanitize_for_serialization(read())
        current["rules"] = client.ApiClient().sanitize_for_serialization(original)["rules"]
        replace(current)
    print(f"without {rule.what} ({removed}): {broke or 'the flow passes'}")
    if rule.what in UNEXERCISED:
        assert broke is None, (
            f"{rule.what}: expected unexercised, but {broke}\n--- the operator's log:\n"
            f"{operator_logs(installed.cluster, installed.release)[-6000:]}"
        )
    else:
        assert broke is not None, f"the flow passes without {rule.what}: the rule is not needed"


def test_the_flow_breaks_without_token_review(installed: Installed) -> None:
    rbac = client.RbacAuthorizationV1Api(installed.cluster.api)
    name = f"{FULLNAME}-{installed.release}-auth-delegator"
    binding = client.ApiClient().sanitize_for_serialization(rbac.read_cluster_role_binding(name))
    rbac.delete_cluster_role_binding(name)
    try:
        broke = _flow(installed)
    finally:
        binding["metadata"] = {"name": name, "labels": binding["metadata"].get("labels")}
        rbac.create_cluster_role_binding(binding)
    assert broke is not None and broke.startswith("agent and task"), broke
