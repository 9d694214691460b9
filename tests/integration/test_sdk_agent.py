"""An SDK Agent served on 127.0.0.1 with its identity from the real operator: inbound
tokens checked against the operator's JWKS and the ACL, de-duplicated redelivery, the
concurrency limit, sync and async handlers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent_mesh.auth.tokens import MeshClaims
from agent_mesh.devcluster.ports import free_port
from agent_mesh.domain.message import BROADCAST, Message, MessageType
from agent_mesh.sdk.agent import Agent, TaskContext
from agent_mesh.testing import OperatorProcess
from agent_mesh.transport.client import Outcome, Transport
from tests.support.cluster import Cluster
from tests.support.mesh_api import external_agent, token_for_agent, token_of, token_source
from tests.support.waiting import wait_for_async

runs: list[str] = []
gates: list[asyncio.Event] = []  # one per test: an Event belongs to one event loop


def gate() -> asyncio.Event:
    return gates[-1]


@pytest.fixture
async def worker(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> AsyncIterator[tuple[str, str]]:
    """A running Agent; yields (its URL, the namespace)."""
    runs.clear()
    gates.append(asyncio.Event())
    gate().set()
    credential = external_agent(cluster, namespace, "sdk-w", "worker", capabilities=["echo"])
    tokens = token_source(operator, namespace, "sdk-w", credential)
    await tokens.token()
    port = free_port()
    agent = Agent(
        "worker", ["echo"], tokens=tokens, host="127.0.0.1", port=port, max_concurrent_tasks=2
    )

    @agent.task("echo")
    async def echo(payload: Any, ctx: TaskContext) -> Any:
        runs.append(f"{ctx.task_uid}/{ctx.attempt}")
        await gate().wait()
        return {"echo": payload, "caller": ctx.caller.sub}

    @agent.on_message
    async def answer(message: Message, caller: MeshClaims) -> Any:
        return {"pong": message.payload, "from": caller.sub}

    @agent.on_event
    def heard(message: Message, caller: MeshClaims) -> None:
        runs.append(f"event:{message.payload['type']}")

    @agent.task("shout")
    def shout(payload: Any, ctx: TaskContext) -> Any:  # a plain function runs in a thread
        return str(payload).upper()

    stop = asyncio.Event()
    serving = asyncio.create_task(agent.serve(stop))
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as http:

        async def ready() -> bool:  # its gate has loaded keys, policies and revocations
            try:
                return (await http.get(f"{url}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for_async(f"the agent at {url} to be ready", ready, within=10, interval=0.05)
    yield url, namespace
    stop.set()
    await serving


def task(
    uid: str, task_type: str = "echo", attempt: int = 1, payload: Any = "hi"
) -> dict[str, Any]:
    return {"taskUid": uid, "attempt": attempt, "taskType": task_type, "payload": payload}


def caller(cluster: Cluster, operator: OperatorProcess, ns: str, name: str, kind: str) -> str:
    """A new agent of type `kind` and the token it would send to the worker (sdk-w)."""
    return token_for_agent(operator, token_of(cluster, operator, ns, name, kind), ns, "sdk-w")


async def post(url: str, token: str | None, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(f"{url}/v1/tasks", json=body, headers=headers)


async def test_orchestrator_runs_a_task_and_gets_the_result(
    cluster: Cluster, operator: OperatorProcess, worker: tuple[str, str]
) -> None:
    url, ns = worker
    boss = caller(cluster, operator, ns, "boss", "orchestrator")
    response = await post(url, boss, task("t1"))
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {"echo": "hi", "caller": "boss"}
    sync = await post(url, boss, task("t2", "shout", payload="quiet"))
    assert sync.json()["result"] == "QUIET"


async def test_calls_without_a_valid_token_or_permission_are_refused(
    cluster: Cluster, operator: OperatorProcess, worker: tuple[str, str]
) -> None:
    url, ns = worker
    assert (await post(url, None, task("t1"))).status_code == 401
    assert (await post(url, "not.a.token", task("t1"))).status_code == 401
    monitor = caller(cluster, operator, ns, "watcher", "monitor")
    denied = await post(url, monitor, task("t1"))
    assert denied.status_code == 403  # a monitor cannot execute
    assert denied.json()["error"]["code"] == "AccessDenied"
    assert runs == []


async def test_the_agent_refuses_tokens_not_addressed_to_it(
    cluster: Cluster, operator: OperatorProcess, worker: tuple[str, str]
) -> None:
    """A caller's own mesh-API token, and a token for another agent, are worth nothing
    here, even from an orchestrator the ACL would let in."""
    url, ns = worker
    boss = token_of(cluster, operator, ns, "boss-aud", "orchestrator")
    external_agent(cluster, ns, "sdk-other", "worker")
    for token in (boss, token_for_agent(operator, boss, ns, "sdk-other")):
        refused = await post(url, token, task("t-aud"))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "WrongAudience"
    assert runs == []


async def test_duplicate_delivery_runs_the_handler_once(
    cluster: Cluster, operator: OperatorProcess, worker: tuple[str, str]
) -> None:
    url, ns = worker
    boss = caller(cluster, operator, ns, "boss2", "orchestrator")
    gate().clear()
    first, second = asyncio.create_task(post(url, boss, task("dup"))), None
    await wait_for_async("the first delivery to reach the handler", lambda: runs == ["dup/1"])
    # the redelivery joins the run in flight, or finds its stored result if it arrives
    # after the gate opens: either way the same answer, and the handler runs once
    second = asyncio.create_task(post(url, boss, task("dup")))
    gate().set()
    answers = [await first, await second]
    again = await post(url, boss, task("dup"))
    assert [a.json()["result"] for a in [*answers, again]] == [
        {"echo": "hi", "caller": "boss2"}
    ] * 3
    assert runs == ["dup/1"]
    await post(url, boss, task("dup", attempt=2))  # a new attempt is new work
    assert runs == ["dup/1", "dup/2"]


async def test_the_concurrency_limit_refuses_extra_work(
    cluster: Cluster, operator: OperatorProcess, worker: tuple[str, str]
) -> None:
    url, ns = worker
    boss = caller(cluster, operator, ns, "boss3", "orchestrator")
    gate().clear()
    busy = [asyncio.create_task(post(url, boss, task(f"b{i}"))) for i in range(2)]
    await wait_for_async("both slots to be taken", lambda: sorted(runs) == ["b0/1", "b1/1"])
    refused = await post(url, boss, task("b-extra"))
    gate().set()
    statuses = [(await b).status_code for b in busy]
    assert statuses == [200, 200]
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "AgentBusy"


async def test_unknown_task_type_names_the_field(
    cluster: Cluster, operator: OperatorProcess, worker: tuple[str, str]
) -> None:
    url, ns = worker
    boss = caller(cluster, operator, ns, "boss4", "orchestrator")
    response = await post(url, boss, task("x", "translate"))
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "taskType"


@contextlib.asynccontextmanager
async def sending(token: str) -> AsyncIterator[Transport]:
    """A Transport sending `token` with every message, closed after the block."""

    async def current() -> str:
        return token

    transport = Transport(token=current)
    try:
        yield transport
    finally:
        await transport.close()


async def test_request_response_and_events_through_the_transport(
    cluster: Cluster, operator: OperatorProcess, worker: tuple[str, str]
) -> None:
    url, ns = worker
    boss = caller(cluster, operator, ns, "boss5", "orchestrator")
    async with sending(boss) as transport:
        request = Message.new(MessageType.REQUEST, "boss5", "sdk-w", "ping")
        reply = await transport.request(url, request)
        assert reply.payload == {"pong": "ping", "from": "boss5"}
        event = Message.new(MessageType.EVENT, "boss5", BROADCAST, {"type": "agent.health"})
        delivery = (await transport.broadcast({"sdk-w": url}, event))["sdk-w"]
        assert (delivery.outcome, delivery.status) == (Outcome.OK, 202)
        assert "event:agent.health" in runs
        forged = Message.new(MessageType.REQUEST, "someone-else", "sdk-w", "ping")
        refused = await transport.send(url, forged)
        assert refused.status == 403  # the envelope's from must be the token's subject


async def test_a_worker_cannot_broadcast_events_to_an_agent(
    cluster: Cluster, operator: OperatorProcess, worker: tuple[str, str]
) -> None:
    url, ns = worker
    other = caller(cluster, operator, ns, "w-other", "worker")
    async with sending(other) as transport:
        event = Message.new(MessageType.EVENT, "w-other", BROADCAST, {"type": "x"})
        delivery = await transport.send(url, event)
    assert delivery.status == 403  # workers have no write on events
