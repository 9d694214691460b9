"""Consent across namespaces with real processes: the operator, the apiserver and an SDK
agent in namespace B; callers in namespace A whose own policies reach B. Reach alone is
refused by the operator and by B's agent; B's consent (an ACLPolicy with `spec.admit`)
lets in exactly what it names. A worker of A whose policy reaches every namespace cannot
revoke, read audit or results in B, nor see B's revocations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.domain.message import Message, MessageType
from agent_mesh.testing import OperatorProcess, manifest
from tests.support.agents import AgentProcess, Plan, fleet
from tests.support.cluster import Cluster
from tests.support.mesh_api import call, error_of, send_message, token_for_agent, token_of
from tests.support.namespaces import TEST_NAMESPACE_PREFIX, fresh_namespace
from tests.support.waiting import wait_for


@dataclass
class Namespaces:
    a: str
    b: str
    echo: AgentProcess
    """An echo_worker SDK agent in B (capability echo)."""
    cluster: Cluster
    operator: OperatorProcess


def apply_policy(cluster: Cluster, namespace: str, name: str, **spec: Any) -> None:
    """Create or replace ACLPolicy `name` and wait until the operator has it in force."""
    body = manifest("ACLPolicy", name, spec)
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "aclpolicies", body)

    def in_force() -> bool:
        obj = cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "aclpolicies", name
        )
        conditions = obj.get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for(f"ACLPolicy {namespace}/{name} to be in force", in_force)


@pytest.fixture(scope="module")
def spaces(
    cluster: Cluster, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Namespaces]:
    with (
        fresh_namespace(cluster, f"{TEST_NAMESPACE_PREFIX}team-a-") as a,
        fresh_namespace(cluster, f"{TEST_NAMESPACE_PREFIX}team-b-") as b,
    ):
        # A's orchestrators and workers reach B (and the workers every namespace) on A's say-so
        apply_policy(
            cluster,
            a,
            "orchestrator",
            agentType="orchestrator",
            allowedActions=["*"],
            allowedResources=["*"],
            namespaces=[b],
        )
        apply_policy(
            cluster,
            a,
            "worker",
            agentType="worker",
            allowedActions=["*"],
            allowedResources=["*"],
            namespaces=["*"],
        )
        echo_plan: Plan = [("echo_worker.py", "echo", "worker", ["echo"])]
        with fleet(cluster, operator, b, echo_plan, tmp_path_factory.mktemp("b")) as in_b:
            yield Namespaces(a, b, in_b["echo"], cluster, operator)


def submit_durable(spaces: Namespaces, token: str) -> httpx.Response:
    """A durable echo task into B, answered at once."""
    return call(
        spaces.operator,
        "POST",
        "/v1/tasks",
        token,
        json={
            "taskType": "echo",
            "payload": {"from": "team-a"},
            "requiredCapabilities": ["echo"],
            "durable": True,
            "wait": False,
            "namespace": spaces.b,
        },
    )


def message_echo(spaces: Namespaces, sender: str, token: str) -> httpx.Response:
    """A request message straight to B's echo agent, with the sender's token exchanged for
    one addressed to it (the exchange does not judge reach: B's echo agent's Gate does)."""
    message = Message.new(MessageType.REQUEST, sender, "echo", {"hi": "from team-a"})
    to_echo = token_for_agent(spaces.operator, token, spaces.b, "echo")
    return send_message(spaces.echo.url, to_echo, message)


def test_cross_namespace_reach_without_consent_is_refused_and_with_consent_allowed(
    spaces: Namespaces,
) -> None:
    cluster, operator = spaces.cluster, spaces.operator
    boss = token_of(cluster, operator, spaces.a, "boss", "orchestrator")

    refused = submit_durable(spaces, boss)
    assert refused.status_code == 403, refused.text
    assert f"namespace {spaces.b} has not consented" in error_of(refused)["message"]
    at_agent = message_echo(spaces, "boss", boss)
    assert at_agent.status_code == 403, at_agent.text
    assert f"namespace {spaces.b} has not consented" in at_agent.json()["error"]["message"]
    tasks = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, spaces.b, "meshtasks")
    assert tasks["items"] == []  # nothing was created in B

    apply_policy(
        cluster,
        spaces.b,
        "admit-team-a",
        agentType="gatekeeper",
        admit=[
            {
                "namespace": spaces.a,
                "agentTypes": ["orchestrator"],
                "actions": ["execute", "read"],
                "resources": ["tasks", "results", "agents"],
            }
        ],
    )
    accepted = submit_durable(spaces, boss)
    assert accepted.status_code in (200, 202), accepted.text
    task_id = accepted.json()["id"]

    def completed() -> dict[str, Any] | None:
        answer = call(operator, "GET", f"/v1/tasks/{task_id}", boss)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body if body.get("phase") == "Completed" else None

    done = wait_for("the durable task in B to complete", completed, timeout=60)
    assert done["result"] == {"from": "team-a"}
    wait_for(
        "B's echo agent to apply B's consent (its policy sync)",
        lambda: message_echo(spaces, "boss", boss).status_code == 200,
    )

    # consent names types: a worker of A, whose own policy reaches B, is still refused
    worker = token_of(cluster, operator, spaces.a, "hand", "worker")
    assert submit_durable(spaces, worker).status_code == 403
    assert message_echo(spaces, "hand", worker).status_code == 403


def test_a_worker_reaching_every_namespace_cannot_administer_or_read_another(
    spaces: Namespaces,
) -> None:
    cluster, operator = spaces.cluster, spaces.operator
    worker = token_of(cluster, operator, spaces.a, "roamer", "worker")
    owner = token_of(cluster, operator, spaces.b, "owner", "orchestrator")
    owner_jti = call(operator, "GET", "/v1/whoami", owner).json()["jti"]

    for body in (
        {"agent": {"namespace": spaces.b, "agentId": "echo"}},
        {"agent": {"namespace": spaces.b, "agentId": "agent-mesh-operator"}},
        {"jti": owner_jti, "namespace": spaces.b},
    ):
        refused = call(operator, "POST", "/v1/revocations", worker, json=body)
        assert refused.status_code == 403, (body, refused.text)
        # B's side refuses: its worker rules deny admin, whatever A's policy says
        assert error_of(refused)["message"].startswith(
            f"worker in {spaces.a} may not admin tokens in {spaces.b}: namespace {spaces.b} "
        )
    assert call(operator, "GET", "/v1/whoami", owner).status_code == 200
    # a jti revoked in A's own namespace does not touch B's token with that jti
    mine = call(operator, "POST", "/v1/revocations", worker, json={"jti": owner_jti})
    assert mine.status_code == 200, mine.text
    assert mine.json() == {"revoked": {"jti": owner_jti, "namespace": spaces.a}}
    assert call(operator, "GET", "/v1/whoami", owner).status_code == 200

    audit = call(operator, "GET", "/v1/audit", worker, params={"namespace": spaces.b})
    assert audit.status_code == 403
    assert f"namespace {spaces.b} has not consented" in error_of(audit)["message"]

    ran = call(
        operator,
        "POST",
        "/v1/tasks",
        owner,
        json={"taskType": "echo", "payload": "b's secret", "requiredCapabilities": ["echo"]},
    )
    assert ran.status_code == 200, ran.text
    assert ran.json()["result"] == "b's secret"
    read = call(operator, "GET", f"/v1/tasks/{ran.json()['id']}", worker)
    assert read.status_code == 403
    assert "b's secret" not in read.text


def test_revocations_listed_to_a_namespace_leave_out_those_of_namespaces_it_does_not_admit(
    spaces: Namespaces,
) -> None:
    cluster, operator = spaces.cluster, spaces.operator
    owner = token_of(cluster, operator, spaces.b, "keeper", "orchestrator")
    jti_b = f"b-{uuid.uuid4().hex}"
    assert call(operator, "POST", "/v1/revocations", owner, json={"jti": jti_b}).is_success
    revoked = call(
        operator,
        "POST",
        "/v1/revocations",
        owner,
        json={"agent": {"namespace": spaces.b, "agentId": "keeper"}},
    )
    assert revoked.is_success, revoked.text

    worker = token_of(cluster, operator, spaces.a, "lister", "worker")
    listing = call(operator, "GET", "/v1/revocations", worker)
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert body["namespaces"] == [spaces.a]  # A admits nobody
    assert jti_b not in body["tokens"]
    assert spaces.b not in body["tokensByNamespace"]
    assert all(entry["namespace"] == spaces.a for entry in body["agents"])
