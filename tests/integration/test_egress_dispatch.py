"""Where the operator dispatches, in process: the mesh API, the authority, the health
monitor and the coordinator on loopback, agents as loopback servers, and the seams of
tests/support/egress_seams.py (names resolve where the test says; only loopback is dialled).

A heartbeat's endpoint is the caller's word: it is used only when it is the agent's
spec.endpoint or the IP of the pod its token was issued to. spec.endpoint itself is
checked again at each dispatch, since its name may resolve elsewhere by then."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agent_mesh.auth.audit import AuditLog
from agent_mesh.auth.authority import ReviewedToken, credential_hash
from agent_mesh.auth.memory import (
    StaticTokenReviewer,
)
from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.clock import SystemClock
from agent_mesh.domain.egress import EgressPolicy
from agent_mesh.domain.health import HealthStatus
from agent_mesh.mesh.callbacks import CallbackNotifier
from agent_mesh.mesh.fastpath import FastPath
from agent_mesh.transport.client import Transport, TransportConfig
from agent_mesh.transport.egress import EgressGuard
from tests.support.egress_seams import Connects, MapResolver, record_connects
from tests.support.memory_mesh import fast_path_served, memory_authority
from tests.support.waiting import wait_for_async

CREDENTIAL = "egress-credential"
NS = "ns"
POD_IP = "10.1.2.3"


@dataclass
class Agent:
    """A loopback server standing in for an agent; records the task uids it got."""

    url: str
    tasks: list[str]
    server: TestServer


async def _agent() -> Agent:
    seen: list[str] = []

    async def tasks(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body["taskUid"])
        return web.json_response({"taskUid": body["taskUid"], "result": body["payload"]})

    app = web.Application()
    app.router.add_post("/v1/tasks", tasks)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return Agent(f"http://127.0.0.1:{server.port}", seen, server)


def _record(agent_id: str, agent_type: str, capability: str, **kw: Any) -> AgentRecord:
    kw.setdefault("service_account", None)
    return AgentRecord(
        namespace=NS,
        name=agent_id,
        uid=f"uid-{agent_id}",
        agent_id=agent_id,
        agent_type=agent_type,
        capabilities=(capability,),
        credential_hash=credential_hash(CREDENTIAL),
        external=kw.get("endpoint") is not None,
        health=HealthStatus.HEALTHY,
        **kw,
    )


@dataclass
class Mesh:
    client: TestClient  # type: ignore[type-arg]
    declared: Agent
    elsewhere: Agent
    reviewer: StaticTokenReviewer
    connects: Connects

    def dialled(self) -> list[tuple[str, int]]:
        """Connections made other than the test's own to the mesh API."""
        api = self.client.server.port
        return [a for a in self.connects.attempts if a[1] != api]

    async def token(self, agent_id: str) -> str:
        response = await self.client.post(
            "/v1/token", json={"namespace": NS, "agentId": agent_id, "credential": CREDENTIAL}
        )
        assert response.status == 200, await response.text()
        return str((await response.json())["token"])

    async def pod_token(self, agent_id: str, pod_ip: str | None) -> str:
        """A token exchanged from the ServiceAccount token of pod `<agent>-0`."""
        pod = f"{agent_id}-0"
        self.reviewer.tokens[f"sa-{agent_id}"] = ReviewedToken(
            "system:serviceaccount:ns:runner", {"authentication.kubernetes.io/pod-name": [pod]}
        )
        self.reviewer.pod_labels[(NS, pod)] = agent_id
        if pod_ip is not None:
            self.reviewer.pod_ips[(NS, pod)] = pod_ip
        response = await self.client.post(
            "/v1/token", json={"serviceAccountToken": f"sa-{agent_id}"}
        )
        assert response.status == 200, await response.text()
        return str((await response.json())["token"])

    async def beat(self, agent_id: str, token: str, endpoint: str) -> dict[str, Any]:
        response = await self.client.post(
            f"/v1/agents/{NS}/{agent_id}/heartbeat",
            json={"activeTasks": 0, "endpoint": endpoint},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status == 200
        return dict(await response.json())

    async def endpoint_of(self, agent_id: str) -> str | None:
        boss = {"Authorization": f"Bearer {await self.token('boss')}"}
        response = await self.client.get(f"/v1/agents/{NS}/{agent_id}", headers=boss)
        return (await response.json())["endpoint"]  # type: ignore[no-any-return]

    async def run(self, capability: str) -> dict[str, Any]:
        boss = {"Authorization": f"Bearer {await self.token('boss')}"}
        task = {"taskType": "t", "payload": 7, "requiredCapabilities": [capability], "retries": 0}
        response = await self.client.post("/v1/tasks", json=task, headers=boss)
        assert response.status == 200, await response.text()
        return dict(await response.json())


@pytest.fixture
async def mesh(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Mesh]:
    connects = record_connects(monkeypatch)
    declared, elsewhere = await _agent(), await _agent()
    clock = SystemClock()
    registry = AgentRegistry()
    agents = [
        _record("w1", "worker", "echo", endpoint=declared.url),
        _record("p1", "worker", "pod", service_account="runner"),  # a user-run pod's agent
        _record("m1", "worker", "meta", endpoint="http://metadata.internal.example:80"),
        _record("boss", "orchestrator", "none"),
    ]
    for record in agents:
        registry.upsert(record)
    audit = AuditLog(clock=clock)
    reviewer = StaticTokenReviewer()
    authority = await memory_authority(registry, clock, audit, reviewer=reviewer)
    resolver = MapResolver({"metadata.internal.example": [["169.254.169.254"]]})
    guard = EgressGuard(EgressPolicy(allow_loopback=True), resolver)
    async with fast_path_served(
        authority,
        agents,
        lambda coordinator: FastPath(coordinator, callbacks=CallbackNotifier(guard=guard)),
        transport=Transport(TransportConfig(retries=0), guard=guard),
    ) as (client, _):
        yield Mesh(client, declared, elsewhere, reviewer, connects)
    await declared.server.close()
    await elsewhere.server.close()


async def test_a_heartbeat_endpoint_that_differs_from_spec_endpoint_is_not_used_for_dispatch(
    mesh: Mesh,
) -> None:
    answer = await mesh.beat("w1", await mesh.token("w1"), mesh.elsewhere.url)
    assert answer["accepted"] is True
    assert "is not the agent's spec.endpoint" in answer["endpointIgnored"]
    assert await mesh.endpoint_of("w1") == mesh.declared.url
    done = await mesh.run("echo")
    assert done["phase"] == "Completed" and done["result"] == 7
    assert mesh.declared.tasks == [done["id"]]
    assert mesh.elsewhere.tasks == []
    assert {port for _, port in mesh.dialled()} == {mesh.declared.server.port}


async def test_a_heartbeat_reporting_spec_endpoint_is_accepted_as_it_is(mesh: Mesh) -> None:
    answer = await mesh.beat("w1", await mesh.token("w1"), mesh.declared.url + "/")
    assert answer == {"accepted": True}


async def test_a_pod_agents_reported_endpoint_is_used_only_when_it_is_its_pod_ip(
    mesh: Mesh,
) -> None:
    token = await mesh.pod_token("p1", POD_IP)
    ignored = await mesh.beat("p1", token, mesh.elsewhere.url)
    assert f"nor its pod's own IP ({POD_IP})" in ignored["endpointIgnored"]
    assert await mesh.endpoint_of("p1") is None
    own = f"http://{POD_IP}:8080"
    assert await mesh.beat("p1", token, own) == {"accepted": True}
    assert await mesh.endpoint_of("p1") == own
    assert mesh.elsewhere.tasks == [] and mesh.dialled() == []  # nothing dialled


async def test_a_pod_whose_ip_is_unknown_cannot_report_an_endpoint(mesh: Mesh) -> None:
    token = await mesh.pod_token("p1", None)
    ignored = await mesh.beat("p1", token, f"http://{POD_IP}:8080")
    assert "not bound to a pod whose IP the operator knows" in ignored["endpointIgnored"]
    assert await mesh.endpoint_of("p1") is None


async def test_a_declared_endpoint_resolving_to_the_metadata_address_is_refused_at_dispatch(
    mesh: Mesh,
) -> None:
    failed = await mesh.run("meta")
    assert failed["phase"] == "Failed" and failed["agentId"] == "m1"
    assert "agent m1 was not called" in failed["error"]
    assert "resolves to 169.254.169.254" in failed["error"]
    assert "cloud metadata service" in failed["error"]
    assert mesh.dialled() == []


async def test_the_operator_token_never_reaches_an_address_a_heartbeat_chose(mesh: Mesh) -> None:
    token = await mesh.pod_token("p1", POD_IP)
    await mesh.beat("p1", token, mesh.elsewhere.url)
    boss = {"Authorization": f"Bearer {await mesh.token('boss')}"}
    task = {"taskType": "t", "payload": 1, "requiredCapabilities": ["pod"], "wait": False}
    response = await mesh.client.post("/v1/tasks", json=task, headers=boss)
    assert response.status == 202
    key = (await response.json())["id"]

    async def no_endpoint() -> str | None:
        answer = await (await mesh.client.get(f"/v1/tasks/{key}", headers=boss)).json()
        error = str(answer.get("error"))
        return error if "no endpoint known" in error else None

    failed = await wait_for_async("the task to fail for lack of an endpoint", no_endpoint, 10, 0.02)
    assert "did not take the task" in failed
    assert mesh.elsewhere.tasks == [] and mesh.dialled() == []
