"""Genuine tokens replayed where they were not meant to go, with real processes: the
operator, SDK agents (examples/ and tests/programs/recorder.py, which shows the header it
was sent) and the apiserver. Every token is good for one audience only: the operator's
dispatch and health-event tokens for the one agent they were sent to, a caller's token
for the one agent it called, a mesh-API token for the mesh API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from agent_mesh.domain.message import BROADCAST, Message, MessageType
from agent_mesh.testing import OperatorProcess
from tests.support.agents import PROGRAMS, AgentProcess, Plan, fleet
from tests.support.cluster import Cluster
from tests.support.mesh_api import call, error_of, exchange_for, token_for_agent, token_of
from tests.support.namespaces import TEST_NAMESPACE_PREFIX, fresh_namespace
from tests.support.waiting import wait_for

RECORDER = PROGRAMS / "recorder.py"
TASK_TIMEOUT_SECONDS = 30


@dataclass
class Mesh:
    """Namespace `home` (the recorder worker `rec`, the echo worker `echo`, the recording
    monitors `mon-1` and `mon-2`) and namespace `away` (an echo worker `echo`)."""

    home: str
    away: str
    agents: dict[tuple[str, str], AgentProcess]
    operator: OperatorProcess
    cluster: Cluster

    def url(self, namespace: str, agent_id: str) -> str:
        return self.agents[(namespace, agent_id)].url

    def token(self, agent_id: str, agent_type: str) -> str:
        """The mesh-API token of a new agent of `home`."""
        return token_of(self.cluster, self.operator, self.home, agent_id, agent_type)


def claims_of(token: str) -> dict[str, Any]:
    """What a token says (the agents checked its signature; here we only read it)."""
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


def bearer(authorization: str) -> str:
    assert authorization.startswith("Bearer "), authorization
    return authorization.removeprefix("Bearer ")


def post(url: str, path: str, token: str, body: Any) -> httpx.Response:
    return httpx.post(
        f"{url}{path}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def task(uid: str, task_type: str = "echo") -> dict[str, Any]:
    return {"taskUid": uid, "attempt": 1, "taskType": task_type, "payload": "replayed"}


@pytest.fixture(scope="module")
def mesh(
    cluster: Cluster, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    monitor = {"RECORDER_AGENT_TYPE": "monitor"}
    at_home: Plan = [
        (RECORDER, "rec", "worker", ["record"]),
        ("echo_worker.py", "echo", "worker", ["echo"]),
        (RECORDER, "mon-1", "monitor", ["observe"], monitor),
        (RECORDER, "mon-2", "monitor", ["observe"], monitor),
    ]
    away_: Plan = [("echo_worker.py", "echo", "worker", ["echo"])]
    with (
        fresh_namespace(cluster, f"{TEST_NAMESPACE_PREFIX}home-") as home,
        fresh_namespace(cluster, f"{TEST_NAMESPACE_PREFIX}away-") as away,
        fleet(cluster, operator, home, at_home, tmp_path_factory.mktemp("home")) as home_agents,
        fleet(cluster, operator, away, away_, tmp_path_factory.mktemp("away")) as away_agents,
    ):
        agents = {(home, agent_id): agent for agent_id, agent in home_agents.items()}
        agents |= {(away, agent_id): agent for agent_id, agent in away_agents.items()}
        yield Mesh(home, away, agents, operator, cluster)


@pytest.fixture(scope="module")
def dispatch_token(mesh: Mesh) -> str:
    """The token the operator sent to worker `rec` with a task (fast path, pinned to it),
    as the worker saw it."""
    boss = mesh.token("boss-dispatch", "orchestrator")
    response = call(
        mesh.operator,
        "POST",
        "/v1/tasks",
        boss,
        json={
            "taskType": "record",
            "requiredCapabilities": ["record"],
            "agentSelector": {"agentRef": "rec"},
            "timeoutSeconds": TASK_TIMEOUT_SECONDS,
            "retries": 0,
        },
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["phase"] == "Completed", answer
    return bearer(answer["result"]["authorization"])


# --- the operator's dispatch token, replayed by the worker that received it ---------------


def test_dispatch_token_is_bound_to_the_worker_and_lives_as_long_as_the_attempt(
    mesh: Mesh, dispatch_token: str
) -> None:
    claims = claims_of(dispatch_token)
    assert (claims["sub"], claims["agentType"]) == ("agent-mesh-operator", "mesh-operator")
    assert (claims["aud"], claims["namespace"]) == (f"{mesh.home}/rec", mesh.home)
    assert claims["exp"] - claims["iat"] <= TASK_TIMEOUT_SECONDS + 10  # the default margin
    # genuine: the worker it was sent to takes it
    own = post(mesh.url(mesh.home, "rec"), "/v1/tasks", dispatch_token, task("t-own", "record"))
    assert own.status_code == 200, own.text


def test_worker_replaying_the_dispatch_token_to_another_namespace_is_refused(
    mesh: Mesh, dispatch_token: str
) -> None:
    response = post(mesh.url(mesh.away, "echo"), "/v1/tasks", dispatch_token, task("t-away"))
    assert response.status_code == 401
    assert error_of(response)["code"] == "WrongAudience"


def test_worker_replaying_the_dispatch_token_to_a_peer_it_was_not_sent_to_is_refused(
    mesh: Mesh, dispatch_token: str
) -> None:
    url = mesh.url(mesh.home, "echo")
    for path, body in (
        ("/v1/tasks", task("t-peer")),
        ("/v1/tasks/batch", {"tasks": [task("t-peer-b")]}),
        (
            "/v1/messages",
            Message.new(MessageType.EVENT, "agent-mesh-operator", BROADCAST, {"x": 1}).to_wire(),
        ),
    ):
        response = post(url, path, dispatch_token, body)
        assert response.status_code == 401, (path, response.text)
        assert error_of(response)["code"] == "WrongAudience"


def test_worker_cannot_use_the_dispatch_token_at_the_operator(
    mesh: Mesh, dispatch_token: str
) -> None:
    whoami = call(mesh.operator, "GET", "/v1/whoami", dispatch_token)
    assert (whoami.status_code, error_of(whoami)["code"]) == (401, "WrongAudience")
    exchanged = exchange_for(mesh.operator, dispatch_token, f"{mesh.away}/echo")
    assert (exchanged.status_code, error_of(exchanged)["code"]) == (401, "WrongAudience")


# --- the operator's health-event tokens, replayed by a monitor ---------------------------


@pytest.fixture(scope="module")
def health_event(mesh: Mesh) -> dict[str, Any]:
    """An agent.health event as monitor mon-1 heard it (with the header it came with):
    a new agent's first heartbeat makes it healthy, which the operator broadcasts."""
    blip = f"blip-{uuid.uuid4().hex[:4]}"
    token = token_of(mesh.cluster, mesh.operator, mesh.home, blip, "worker")
    beat = call(mesh.operator, "POST", f"/v1/agents/{mesh.home}/{blip}/heartbeat", token, json={})
    assert beat.status_code == 200, beat.text
    asker = token_for_agent(mesh.operator, mesh.token("asker", "orchestrator"), mesh.home, "mon-1")

    def heard() -> dict[str, Any] | None:
        message = Message.new(MessageType.REQUEST, "asker", "mon-1", None)
        answer = post(mesh.url(mesh.home, "mon-1"), "/v1/messages", asker, message.to_wire())
        assert answer.status_code == 200, answer.text
        for event in answer.json()["payload"]["heard"]:
            if event["event"] == "agent.health" and event["data"]["agentId"] == blip:
                return event  # type: ignore[no-any-return]
        return None

    event: dict[str, Any] = wait_for("mon-1 to hear the health event", heard)
    return event


def test_health_event_tokens_are_bound_to_each_monitor_and_short_lived(
    mesh: Mesh, health_event: dict[str, Any]
) -> None:
    claims = claims_of(bearer(health_event["authorization"]))
    assert health_event["from"] == "agent-mesh-operator"
    assert (claims["aud"], claims["namespace"]) == (f"{mesh.home}/mon-1", mesh.home)
    assert claims["exp"] - claims["iat"] <= 60


def test_monitor_replaying_a_health_event_token_to_another_monitor_is_refused(
    mesh: Mesh, health_event: dict[str, Any]
) -> None:
    token = bearer(health_event["authorization"])
    event = Message.new(
        MessageType.EVENT,
        "agent-mesh-operator",
        BROADCAST,
        {"agentId": "forged", "health": "unreachable"},
        metadata={"event": "agent.health"},
    ).to_wire()
    refused = post(mesh.url(mesh.home, "mon-2"), "/v1/messages", token, event)
    assert refused.status_code == 401
    assert error_of(refused)["code"] == "WrongAudience"
    elsewhere = post(mesh.url(mesh.away, "echo"), "/v1/messages", token, event)
    assert elsewhere.status_code == 401


# --- a caller's token, replayed by the agent it called -----------------------------------


@pytest.fixture(scope="module")
def callers_token(mesh: Mesh) -> str:
    """What worker `rec` received when an orchestrator called it through the SDK's path:
    the orchestrator's token, exchanged for one addressed to `rec`."""
    token = token_for_agent(mesh.operator, mesh.token("caller", "orchestrator"), mesh.home, "rec")
    message = Message.new(MessageType.REQUEST, "caller", "rec", None)
    answer = post(mesh.url(mesh.home, "rec"), "/v1/messages", token, message.to_wire())
    assert answer.status_code == 200, answer.text
    seen = bearer(answer.json()["payload"]["authorization"])
    assert claims_of(seen)["aud"] == f"{mesh.home}/rec"
    return seen


def test_agent_replaying_its_callers_token_to_the_operator_is_refused(
    mesh: Mesh, callers_token: str
) -> None:
    for method, path in (("GET", "/v1/whoami"), ("GET", f"/v1/agents?namespace={mesh.home}")):
        response = call(mesh.operator, method, path, callers_token)
        assert response.status_code == 401, path
        assert error_of(response)["code"] == "WrongAudience"
    submit = call(mesh.operator, "POST", "/v1/tasks", callers_token, json={"taskType": "echo"})
    assert (submit.status_code, error_of(submit)["code"]) == (401, "WrongAudience")


def test_agent_replaying_its_callers_token_to_a_third_agent_is_refused(
    mesh: Mesh, callers_token: str
) -> None:
    message = Message.new(MessageType.REQUEST, "caller", "echo", "hi").to_wire()
    for namespace in (mesh.home, mesh.away):
        response = post(mesh.url(namespace, "echo"), "/v1/messages", callers_token, message)
        assert response.status_code == 401, namespace
        assert error_of(response)["code"] == "WrongAudience"


def test_agent_cannot_exchange_its_callers_token_for_tokens_to_others(
    mesh: Mesh, callers_token: str
) -> None:
    response = exchange_for(mesh.operator, callers_token, f"{mesh.home}/echo")
    assert response.status_code == 401
    error = error_of(response)
    assert (error["code"], error["field"]) == ("WrongAudience", "subjectToken")


def test_the_exchange_refuses_recipients_that_do_not_exist(mesh: Mesh) -> None:
    token = mesh.token("prober", "worker")
    response = exchange_for(mesh.operator, token, f"{mesh.home}/nobody")
    assert (response.status_code, error_of(response)["code"]) == (400, "RecipientUnknown")
    batch = exchange_for(mesh.operator, token, f"{mesh.home}/echo", f"{mesh.away}/nobody")
    assert batch.status_code == 200
    first, second = batch.json()["tokens"]
    assert claims_of(first["accessToken"])["aud"] == f"{mesh.home}/echo"
    assert second["error"]["code"] == "RecipientUnknown"
