"""The generated CRDs in a real apiserver: discovery, printer columns, explain, validation."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes import client

from agent_mesh.testing import manifest
from tests.support.cluster import Cluster

GROUP, VERSION = "agentmesh.io", "v1alpha1"


def _agent(name: str = "worker-1", **spec: Any) -> dict[str, Any]:
    return manifest(
        "MeshAgent", name, {"agentType": "worker", "capabilities": ["summarize"], **spec}
    )


def _task(name: str = "t1", **spec: Any) -> dict[str, Any]:
    return manifest(
        "MeshTask",
        name,
        {
            "taskType": "summarize",
            "requiredCapabilities": ["summarize"],
            "payload": {"text": "hi"},
            **spec,
        },
    )


def _policy(name: str = "p1", **spec: Any) -> dict[str, Any]:
    return manifest(
        "ACLPolicy",
        name,
        {
            "agentType": "researcher",
            "allowedActions": ["read"],
            "allowedResources": ["tasks"],
            **spec,
        },
    )


PLURALS = {"MeshAgent": "meshagents", "MeshTask": "meshtasks", "ACLPolicy": "aclpolicies"}


def _create(cluster: Cluster, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return cluster.custom.create_namespaced_custom_object(  # type: ignore[no-any-return]
        GROUP, VERSION, namespace, PLURALS[body["kind"]], body, field_validation="Strict"
    )


def _rejection(cluster: Cluster, namespace: str, body: dict[str, Any]) -> str:
    with pytest.raises(client.ApiException) as info:
        _create(cluster, namespace, body)
    assert info.value.status in (400, 422), info.value.body
    return str(json.loads(info.value.body)["message"])


@pytest.mark.smoke
def test_crds_are_established_with_names_a_user_types(
    cluster: Cluster, crds: list[dict[str, Any]]
) -> None:
    out = cluster.kubectl("api-resources", "--api-group", GROUP, "-o", "wide").stdout
    for plural, short in (("meshagents", "ma"), ("meshtasks", "mt"), ("aclpolicies", "aclp")):
        line = next(row for row in out.splitlines() if row.startswith(plural))
        assert f" {short} " in f" {line} "
        assert "agentmesh" in line  # category
        assert "true" in line  # namespaced


def test_get_meshagents_shows_the_printer_columns(
    cluster: Cluster, crds: Any, namespace: str
) -> None:
    _create(cluster, namespace, _agent())
    wide = cluster.kubectl("get", "meshagents", "-n", namespace, "-o", "wide").stdout
    header = wide.splitlines()[0].split()
    assert header[:1] == ["NAME"]
    for column in ("TYPE", "HEALTH", "ACTIVE", "CAPABILITIES", "LAST", "SEEN", "ENDPOINT", "AGE"):
        assert column in header, wide
    narrow = cluster.kubectl("get", "ma", "-n", namespace).stdout.splitlines()[0]
    assert "ENDPOINT" not in narrow  # wide-only column
    row = wide.splitlines()[1]
    assert row.startswith("worker-1") and "worker" in row and "summarize" in row
    everything = cluster.kubectl("get", "agentmesh", "-n", namespace).stdout
    assert "meshagent.agentmesh.io/worker-1" in everything


def test_get_meshtasks_shows_priority_and_phase_columns(
    cluster: Cluster, crds: Any, namespace: str
) -> None:
    _create(cluster, namespace, _task(priority="critical"))
    out = cluster.kubectl("get", "mt", "-n", namespace).stdout.splitlines()
    for column in ("TYPE", "PRIORITY", "PHASE", "AGENT", "ATTEMPT", "AGE"):
        assert column in out[0].split(), out
    assert "critical" in out[1] and "summarize" in out[1]


def test_explain_shows_the_field_description(cluster: Cluster, crds: Any) -> None:
    text = cluster.kubectl("explain", "meshtask.spec.priority").stdout
    assert "FIELD:" in text and "priority" in text
    assert "medium" in text  # the description states the default
    for value in ("low", "high", "critical"):
        assert value in text


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("agent type not a DNS label", _agent(agentType="Data_Scientist"), "spec.agentType"),
    ("agentId not a DNS label", _agent(agentId="Worker_1"), "spec.agentId"),
    ("the operator's reserved type", _agent(agentType="mesh-operator"), "reserved"),
    ("the operator's agentId", _agent(agentId="agent-mesh-operator"), "agentId"),
    ("the operator's agentId as the name", _agent("agent-mesh-operator"), "reserved"),
    ("a policy for the operator's type", _policy(agentType="mesh-operator"), "reserved"),
    ("port out of range", _agent(port=70000), "spec.port"),
    ("zero concurrent tasks", _agent(maxConcurrentTasks=0), "spec.maxConcurrentTasks"),
    ("unknown network mode", _agent(network="vpn"), "spec.network"),
    ("endpoint not an http URL", _agent(endpoint="ftp://files.local/agent"), "spec.endpoint"),
    (
        "heartbeat interval zero",
        _agent(heartbeatIntervalSeconds=0),
        "spec.heartbeatIntervalSeconds",
    ),
    ("capability with spaces", _agent(capabilities=["Summarize Text"]), "spec.capabilities"),
    ("unknown spec field", _agent(agentTyp="worker"), "agentTyp"),
    ("priority not in enum", _task(priority="urgent"), "spec.priority"),
    ("negative timeout", _task(timeoutSeconds=-5), "spec.timeoutSeconds"),
    ("too many retries", _task(retries=1000), "spec.retries"),
    ("task without a type", {**_task(), "spec": {"payload": {}}}, "spec.taskType"),
    ("unknown ACL action", _policy(allowedActions=["read", "fly"]), "spec.allowedActions"),
    ("policy namespace not a DNS label", _policy(namespaces=["Team A"]), "spec.namespaces"),
    (
        "consent for every namespace",
        _policy(
            admit=[{"namespace": "*", "agentTypes": ["*"], "actions": ["read"], "resources": ["*"]}]
        ),
        "'*' is not allowed",
    ),
    (
        "consent naming no action",
        _policy(
            admit=[{"namespace": "team-a", "agentTypes": ["*"], "actions": [], "resources": ["*"]}]
        ),
        "spec.admit[0].actions",
    ),
]


@pytest.mark.parametrize(("case", "body", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_resources_are_rejected_naming_the_field(
    cluster: Cluster, crds: Any, namespace: str, case: str, body: dict[str, Any], field: str
) -> None:
    message = _rejection(cluster, namespace, copy.deepcopy(body))
    assert field in message, f"{case}: {message}"


def test_agent_id_cannot_change(cluster: Cluster, crds: Any, namespace: str) -> None:
    created = _create(cluster, namespace, _agent(agentId="worker-1"))
    created["spec"]["agentId"] = "worker-2"
    with pytest.raises(client.ApiException) as info:
        cluster.custom.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, "meshagents", "worker-1", created
        )
    message = json.loads(info.value.body)["message"]
    assert info.value.status == 422
    assert "spec.agentId" in message and "immutable" in message


def test_oversized_payload_is_rejected_by_the_webhook(
    cluster: Cluster, crds: Any, operator: Any, namespace: str
) -> None:
    big = {"text": "x" * (300 * 1024)}
    message = _rejection(cluster, namespace, _task(payload=big))
    assert "spec.payload" in message
    assert "262144" in message  # the limit is stated
    _create(cluster, namespace, _task(name="small", payload={"text": "x" * 1024}))


def test_defaults_are_applied_by_the_apiserver(cluster: Cluster, crds: Any, namespace: str) -> None:
    agent = _create(cluster, namespace, _agent())
    assert agent["spec"]["port"] == 8080
    assert agent["spec"]["maxConcurrentTasks"] == 10
    assert agent["spec"]["heartbeatIntervalSeconds"] == 30
    task = _create(cluster, namespace, _task())
    assert task["spec"]["priority"] == "medium"
    assert task["spec"]["timeoutSeconds"] == 300
    assert task["spec"]["retries"] == 3


def test_a_meshtask_spec_cannot_change_but_its_status_and_labels_can(
    cluster: Cluster, crds: Any, namespace: str
) -> None:
    original = json.dumps(_task())
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=original)
    # A GitOps re-sync of the same manifest changes nothing and is accepted (the defaults
    # the apiserver filled in are not a change).
    again = cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=original)
    assert "unchanged" in again.stdout
    for change in ({"priority": "high"}, {"payload": {"text": "other"}}, {"retries": 0}):
        with pytest.raises(client.ApiException) as info:
            cluster.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, "meshtasks", "t1", {"spec": change}
            )
        message = json.loads(info.value.body)["message"]
        assert info.value.status == 422, message
        assert "spec: Forbidden" in message and "spec is immutable" in message
        assert "create a new MeshTask" in message
    # What a GitOps tool does with a changed manifest: the same refusal, by name.
    changed = json.dumps(_task(priority="critical") | {"metadata": {"name": "t1"}})
    applied = cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=changed, check=False)
    assert applied.returncode != 0 and "spec is immutable" in applied.stderr
    # The operator's status writes and users' labels still go through (the answers are
    # checked, not a later read: an operator of the session may write status too).
    with_status = cluster.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "meshtasks", "t1", {"status": {"phase": "Failed"}}
    )
    assert with_status["status"]["phase"] == "Failed"
    labelled = cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshtasks", "t1", {"metadata": {"labels": {"team": "a"}}}
    )
    assert labelled["metadata"]["labels"] == {"team": "a"}
    assert labelled["spec"]["priority"] == "medium"
    assert labelled["metadata"]["generation"] == 1
