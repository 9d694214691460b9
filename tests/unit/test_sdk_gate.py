"""The agent's gate fails closed: its own namespace from configuration, 503 until it has
loaded once, keys replaced on every sync and retired on time, a failing sync reported;
and the Agent's routes built on it (redelivery, deep bodies), against an operator's mesh
API in memory on loopback."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from agent_mesh.auth.authority import ReviewedToken
from agent_mesh.auth.keys import KeyRing
from agent_mesh.domain.acl import MeshCall, policy_from_spec
from agent_mesh.domain.errors import AuthError, ForbiddenError, UnavailableError
from agent_mesh.sdk.agent import Agent, TaskContext
from agent_mesh.sdk.gate import Gate
from agent_mesh.sdk.identity import TokenSource
from tests.support.memory_mesh import MemoryMesh, agent_record, start_memory_mesh


@pytest.fixture
async def mesh() -> AsyncIterator[MemoryMesh]:
    mesh = await start_memory_mesh(
        [
            agent_record("me", "worker"),
            agent_record("boss", "orchestrator"),
            agent_record("boss2", "orchestrator"),
            agent_record("runner", "runner"),  # custom type: execute tasks, nothing else
            agent_record("outsider", "orchestrator", namespace="other"),
            agent_record("pod-agent", "worker", service_account="pod-sa", workload=True),
        ]
    )
    policy = {"agentType": "runner", "allowedActions": ["execute"], "allowedResources": ["tasks"]}
    mesh.authority.policies.upsert(
        "ns", "runners", mesh.clock.now(), policy_from_spec("ns", "runners", policy)
    )
    yield mesh
    await mesh.client.close()


ME = "ns/me"
"""The audience of every token sent to the gate under test (agent `me`)."""


def _gate(mesh: MemoryMesh, **kw: Any) -> Gate:
    return Gate(mesh.tokens("me"), 30, clock=mesh.clock, **kw)


def _bearer(token: str) -> str:
    return f"Bearer {token}"


# --- the gate --------------------------------------------------------------------------


async def test_the_gate_refuses_every_call_with_503_until_its_first_sync(mesh: MemoryMesh) -> None:
    gate = _gate(mesh)
    boss = await mesh.token("boss", to=ME)
    with pytest.raises(UnavailableError) as caught:
        await gate.authenticate(_bearer(boss))
    assert (caught.value.code, caught.value.status) == ("GateNotReady", 503)
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1
    assert not gate.ready
    assert await gate.sync_once()
    assert gate.ready
    assert (await gate.authenticate(_bearer(boss))).sub == "boss"


async def test_the_gate_judges_callers_in_its_own_namespace_never_the_callers(
    mesh: MemoryMesh,
) -> None:
    gate = _gate(mesh)
    await gate.sync()
    outsider = await gate.authenticate(_bearer(await mesh.token("outsider", "other", to=ME)))
    with pytest.raises(ForbiddenError):  # an orchestrator of "other" has no reach into "ns"
        gate.authorize(outsider, MeshCall.SUBMIT_TASK)
    mesh.authority.registry.remove("ns", "me")  # the mesh refuses us for a while...
    gate._tokens.invalidate()  # ...and we forget our token (as after a 401)
    assert gate._tokens.identity is None
    with pytest.raises(ForbiddenError):  # still "ns", not the caller's "other"
        gate.authorize(outsider, MeshCall.SUBMIT_TASK)
    assert gate.namespace == "ns"


async def test_a_pod_gate_refuses_an_identity_other_than_its_configured_one(
    mesh: MemoryMesh, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text("sa-token")
    mesh.reviewer.tokens["sa-token"] = ReviewedToken("system:serviceaccount:ns:pod-sa", {})
    tokens = TokenSource(
        mesh.url, namespace="elsewhere", service_account_token_path=tmp_path / "token"
    )
    gate = Gate(tokens, 30, clock=mesh.clock)
    assert not await gate.sync_once()
    assert not gate.loaded
    assert tokens.identity is not None and tokens.identity.namespace == "ns"
    with pytest.raises(UnavailableError):
        await gate.authenticate(_bearer(await mesh.token("boss", to=ME)))


async def test_a_pod_gate_without_configuration_takes_its_identity_from_the_first_exchange(
    mesh: MemoryMesh, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text("sa-token")
    mesh.reviewer.tokens["sa-token"] = ReviewedToken("system:serviceaccount:ns:pod-sa", {})
    gate = Gate(TokenSource(mesh.url, service_account_token_path=tmp_path / "token"), 30)
    await gate.sync()
    assert (gate.namespace, gate.agent_id) == ("ns", "pod-agent")


async def test_the_key_set_is_replaced_on_every_sync_not_merged(mesh: MemoryMesh) -> None:
    gate = _gate(mesh)
    boss = await mesh.token("boss", to=ME)
    await gate.sync()
    assert (await gate.authenticate(_bearer(boss))).sub == "boss"
    # the operator drops the key outright (say, an admin replaced a leaked key in the
    # Secret): no retirement time involved
    mesh.keys.ring = KeyRing.generate("ES256", mesh.clock.now())
    await mesh.authority.maintain_keys()
    await gate.sync()
    with pytest.raises(AuthError) as caught:
        await gate.authenticate(_bearer(boss))
    assert caught.value.code == "UnknownKey"


async def test_a_rotated_out_key_stops_verifying_at_its_retire_time_without_a_sync(
    mesh: MemoryMesh,
) -> None:
    gate = _gate(mesh)
    boss = await mesh.token("boss", to=ME)  # valid for an hour
    # a rotation with a one-minute overlap (as written into the key Secret)
    mesh.keys.ring = mesh.authority.keyring().rotate(mesh.clock.now(), dt.timedelta(minutes=1))
    await mesh.authority.maintain_keys()
    await gate.sync()
    assert (await gate.authenticate(_bearer(boss))).sub == "boss"
    mesh.clock.advance(59)
    assert (await gate.authenticate(_bearer(boss))).sub == "boss"
    mesh.clock.advance(1)  # no sync since: the JWKS's retireAt alone retires the key
    with pytest.raises(AuthError) as caught:
        await gate.authenticate(_bearer(boss))
    assert caught.value.code == "UnknownKey"
    assert "rotated out" in caught.value.message


async def test_a_sync_failing_past_the_bound_is_reported_by_readiness_metric_and_log(
    mesh: MemoryMesh, caplog: pytest.LogCaptureFixture
) -> None:
    gate = _gate(mesh)
    await gate.sync()
    metrics = generate_latest(gate.registry).decode()
    assert "agentmesh_agent_sync_stale 0.0" in metrics
    me = mesh.registry.get("ns", "me")
    mesh.registry.remove("ns", "me")  # every pull is refused from now on
    with caplog.at_level(logging.WARNING, logger="agent_mesh.sdk"):
        mesh.clock.advance(60)
        assert not await gate.sync_once()
        assert gate.ready  # 60 s old: within the bound of 3 x 30 s
        mesh.clock.advance(30)
        assert not await gate.sync_once()
        assert not gate.ready and gate.stale
        mesh.clock.advance(30)
        assert not await gate.sync_once()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # reported once, not every interval
    assert "policy sync has failed for 90 s (bound 90 s)" in errors[0].getMessage()
    metrics = generate_latest(gate.registry).decode()
    assert "agentmesh_agent_sync_stale 1.0" in metrics
    assert "agentmesh_agent_sync_failures_total 3.0" in metrics
    assert "agentmesh_agent_sync_age_seconds 120.0" in metrics
    assert me is not None
    mesh.registry.upsert(me)
    assert await gate.sync_once()
    assert gate.ready and not gate.stale


async def test_a_half_done_sync_changes_nothing(
    mesh: MemoryMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = _gate(mesh)
    boss = await mesh.token("boss", to=ME)
    await gate.sync()
    mesh.keys.ring = KeyRing.generate("ES256", mesh.clock.now())  # new JWKS...
    await mesh.authority.maintain_keys()

    def broken(namespace: str) -> list[Any]:
        raise RuntimeError("policy store unavailable")

    monkeypatch.setattr(mesh.authority.policies, "in_force", broken)  # ...but no policies
    assert not await gate.sync_once()
    assert (await gate.authenticate(_bearer(boss))).sub == "boss"  # the old keys still


# --- the agent's routes on the gate ---------------------------------------------------


@pytest.fixture
async def agent_client(mesh: MemoryMesh) -> AsyncIterator[tuple[Agent, TestClient]]:  # type: ignore[type-arg]
    agent = Agent("worker", ["echo"], tokens=mesh.tokens("me"), max_concurrent_tasks=5)
    runs: list[str] = []

    @agent.task("echo")
    async def echo(payload: Any, ctx: TaskContext) -> Any:
        runs.append(f"{ctx.caller.sub}:{payload}")
        return {"echo": payload, "runs": len(runs)}

    client = TestClient(TestServer(agent.app(), host="127.0.0.1"))
    await client.start_server()
    yield agent, client
    await client.close()


@pytest.fixture
async def gated_client(
    agent_client: tuple[Agent, TestClient],  # type: ignore[type-arg]
) -> tuple[Agent, TestClient]:  # type: ignore[type-arg]
    """agent_client with its gate loaded (keys, policies, revocations), as serve does."""
    await agent_client[0].refresh_keys()
    return agent_client


async def _auth(mesh: MemoryMesh, caller: str) -> dict[str, str]:
    """The Authorization header of `caller`, with a token addressed to this agent (ME)."""
    return {"Authorization": _bearer(await mesh.token(caller, to=ME))}


def _task(uid: str, payload: Any = "hi", attempt: int = 1) -> dict[str, Any]:
    return {"taskUid": uid, "attempt": attempt, "taskType": "echo", "payload": payload}


async def test_the_agent_answers_503_with_retry_after_and_is_not_ready_before_loading(
    mesh: MemoryMesh,
    agent_client: tuple[Agent, TestClient],  # type: ignore[type-arg]
) -> None:
    agent, client = agent_client
    headers = await _auth(mesh, "boss")
    refused = await client.post("/v1/tasks", json=_task("t1"), headers=headers)
    assert refused.status == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await refused.json())["error"]["code"] == "GateNotReady"
    for route in ("/v1/tasks/batch", "/v1/messages", "/v1/stream"):
        assert (await client.post(route, json={}, headers=headers)).status == 503, route
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["loaded"] is False
    await agent.refresh_keys()  # loads the gate, as serve does
    assert (await client.post("/v1/tasks", json=_task("t1"), headers=headers)).status == 200
    assert (await client.get("/readyz")).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert "agentmesh_agent_gate_loaded 1.0" in metrics


async def test_a_redelivered_result_goes_to_another_caller_only_with_read_results(
    mesh: MemoryMesh,
    gated_client: tuple[Agent, TestClient],  # type: ignore[type-arg]
) -> None:
    _, client = gated_client
    boss = await _auth(mesh, "boss")
    first = await client.post("/v1/tasks", json=_task("t1", "secret plan"), headers=boss)
    assert (await first.json())["result"] == {"echo": "secret plan", "runs": 1}
    # the same caller redelivering gets the first result, and nothing runs twice
    again = await client.post("/v1/tasks", json=_task("t1", "ignored"), headers=boss)
    assert (await again.json())["result"] == {"echo": "secret plan", "runs": 1}
    # a caller that may execute tasks but not read results cannot fish for it by uid
    runner = await _auth(mesh, "runner")
    fishing = await client.post("/v1/tasks", json=_task("t1", "mine"), headers=runner)
    assert fishing.status == 403
    error = (await fishing.json())["error"]
    assert (error["code"], error["field"]) == ("AccessDenied", "taskUid")
    assert "delivered by ns/boss" in error["message"]
    fresh = await client.post("/v1/tasks", json=_task("t2", "mine"), headers=runner)
    assert (await fresh.json())["result"] == {"echo": "mine", "runs": 2}  # own work is fine
    # in a batch too
    batch = await client.post("/v1/tasks/batch", json={"tasks": [_task("t1")]}, headers=runner)
    assert (await batch.json())["results"][0]["status"] == 403
    # a caller that may read results gets the first result (nothing runs again)
    boss2 = await _auth(mesh, "boss2")
    shared = await client.post("/v1/tasks", json=_task("t1", "x"), headers=boss2)
    assert (await shared.json())["result"] == {"echo": "secret plan", "runs": 1}


async def test_a_deeply_nested_body_to_the_agent_is_refused_with_400(
    mesh: MemoryMesh,
    gated_client: tuple[Agent, TestClient],  # type: ignore[type-arg]
) -> None:
    _, client = gated_client
    headers = {
        "Authorization": _bearer(await mesh.token("boss", to=ME)),
        "Content-Type": "text/plain",
    }
    body = b'{"taskUid": "t", "taskType": "echo", "payload": ' + b"[" * 100_000
    for route in ("/v1/tasks", "/v1/tasks/batch", "/v1/messages", "/v1/stream"):
        response = await client.post(route, data=body + b"\n", headers=headers)
        assert response.status == 400, route
        error = (await response.json())["error"]
        assert error["code"] == "JsonTooDeep", route


async def test_a_message_for_another_agent_is_refused_even_after_a_refused_token(
    mesh: MemoryMesh,
    gated_client: tuple[Agent, TestClient],  # type: ignore[type-arg]
) -> None:
    agent, client = gated_client
    agent.tokens.invalidate()  # as after a 401: the agent's own identity is unknown a while
    boss = await mesh.token("boss", to=ME)
    message = {
        "messageId": "m1",
        "from": "boss",
        "to": "someone-else",
        "type": "request",
        "payload": {},
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
    }
    response = await client.post(
        "/v1/messages", json=message, headers={"Authorization": _bearer(boss)}
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "Misaddressed"
