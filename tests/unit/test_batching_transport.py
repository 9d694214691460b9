"""Batched task dispatch on loopback: task POSTs issued together to one agent travel as one
POST /v1/tasks/batch, each caller still gets its own Delivery (as a single call would
have produced it), quick answers are not held back by slow ones, and an agent without
the batch route gets one call per task."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from agent_mesh.devcluster.ports import free_port
from agent_mesh.domain.stream import NDJSON
from agent_mesh.domain.task_message import TaskRequest
from agent_mesh.transport import batching
from agent_mesh.transport.batching import BatchingTransport
from agent_mesh.transport.client import Outcome, TransportConfig
from tests.support.stand_ins import serving


@dataclass
class Agent:
    """Answers by task type: `echo` at once, `slow` after payload seconds, `busy` with
    a 503 AgentBusy line, `skip` not at all (left out of the stream)."""

    url: str
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    singles: list[dict[str, Any]] = field(default_factory=list)
    batch_route: bool = True
    refuse: int | None = None
    tokens: list[str | None] = field(default_factory=list)


async def _answer(task: dict[str, Any]) -> dict[str, Any] | None:
    head = {"taskUid": task["taskUid"], "attempt": task["attempt"]}
    kind = task["taskType"]
    if kind == "slow":
        await asyncio.sleep(task["payload"])
    if kind == "busy":
        error = {"code": "AgentBusy", "message": "at its limit", "field": None}
        return {**head, "error": error, "status": 503}
    if kind == "skip":
        return None
    return {**head, "result": task["payload"]}


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    port = free_port()
    state = Agent(f"http://127.0.0.1:{port}")

    async def batch(request: web.Request) -> web.StreamResponse:
        state.tokens.append(request.headers.get("Authorization"))
        if not state.batch_route:
            raise web.HTTPNotFound()
        if state.refuse is not None:
            error = {"code": "AccessDenied", "message": "no", "field": None}
            return web.json_response({"error": error}, status=state.refuse)
        tasks = (await request.json())["tasks"]
        state.batches.append(tasks)
        if request.headers.get("Accept") != NDJSON:
            return web.json_response({"results": [await _answer(t) for t in tasks]})
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
        for done in asyncio.as_completed([_answer(t) for t in tasks]):
            line = await done
            if line is not None:
                await response.write(json.dumps(line).encode() + b"\n")
        await response.write_eof()
        return response

    async def single(request: web.Request) -> web.Response:
        task = await request.json()
        state.singles.append(task)
        answer = await _answer(task)
        return web.json_response(answer)

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/v1/tasks/batch", batch)
    app.router.add_post("/v1/tasks", single)
    async with serving(app, port):
        yield state


@pytest.fixture
async def transport() -> AsyncIterator[BatchingTransport]:
    t = BatchingTransport(TransportConfig(retries=0, timeout_seconds=10))
    yield t
    await t.close()


def task(uid: str, kind: str = "echo", payload: Any = None) -> TaskRequest:
    return TaskRequest.of(uid, 1, kind, payload, {})


async def test_posts_issued_together_travel_as_one_batch(
    agent: Agent, transport: BatchingTransport
) -> None:
    deliveries = await asyncio.gather(
        *(
            transport.post(agent.url, "/v1/tasks", task(f"t{i}", payload=i), token="tok")
            for i in range(50)
        )
    )
    assert len(agent.batches) == 1 and len(agent.batches[0]) == 50
    assert agent.tokens == ["Bearer tok"]
    assert [d.body["result"] for d in deliveries] == list(range(50))
    assert {(d.outcome, d.status) for d in deliveries} == {(Outcome.OK, 200)}


async def test_a_quick_answer_is_not_held_back_by_a_slow_one(
    agent: Agent, transport: BatchingTransport
) -> None:
    slow = asyncio.ensure_future(transport.post(agent.url, "/v1/tasks", task("s", "slow", 1.0)))
    quick = asyncio.ensure_future(transport.post(agent.url, "/v1/tasks", task("q", payload=1)))
    done, _ = await asyncio.wait({slow, quick}, return_when=asyncio.FIRST_COMPLETED)
    assert done == {quick}
    assert len(agent.batches) == 1  # they did share a batch
    assert (await slow).body["result"] == 1.0


async def test_each_task_keeps_its_own_timeout(agent: Agent, transport: BatchingTransport) -> None:
    slow = transport.post(agent.url, "/v1/tasks", task("s", "slow", 2.0), timeout_seconds=0.2)
    quick = transport.post(agent.url, "/v1/tasks", task("q", payload=1), timeout_seconds=5)
    late, ok = await asyncio.gather(slow, quick)
    assert late.outcome is Outcome.TIMEOUT and "0.2 s" in (late.error or "")
    assert ok.outcome is Outcome.OK


async def test_a_task_error_keeps_its_status_and_code(
    agent: Agent, transport: BatchingTransport
) -> None:
    busy, ok = await asyncio.gather(
        transport.post(agent.url, "/v1/tasks", task("b", "busy")),
        transport.post(agent.url, "/v1/tasks", task("o", payload=2)),
    )
    assert (busy.outcome, busy.status, busy.code) == (Outcome.HTTP_ERROR, 503, "AgentBusy")
    assert ok.body["result"] == 2


async def test_a_task_left_out_of_the_answer_is_a_bad_response(
    agent: Agent, transport: BatchingTransport
) -> None:
    skipped = await transport.post(agent.url, "/v1/tasks", task("x", "skip"))
    assert skipped.outcome is Outcome.BAD_RESPONSE
    assert "left this task out" in (skipped.error or "")


async def test_a_refused_batch_refuses_each_task_with_its_status(
    agent: Agent, transport: BatchingTransport
) -> None:
    agent.refuse = 403
    a, b = await asyncio.gather(
        transport.post(agent.url, "/v1/tasks", task("a")),
        transport.post(agent.url, "/v1/tasks", task("b")),
    )
    for d in (a, b):
        assert (d.outcome, d.status, d.code) == (Outcome.HTTP_ERROR, 403, "AccessDenied")


async def test_an_agent_without_the_batch_route_gets_one_call_per_task(
    agent: Agent, transport: BatchingTransport
) -> None:
    agent.batch_route = False
    first = await asyncio.gather(
        *(transport.post(agent.url, "/v1/tasks", task(f"t{i}", payload=i)) for i in range(3))
    )
    assert [d.body["result"] for d in first] == [0, 1, 2]
    assert len(agent.singles) == 3
    tried = len(agent.tokens)
    again = await transport.post(agent.url, "/v1/tasks", task("t9", payload=9))
    assert again.body["result"] == 9
    assert len(agent.tokens) == tried  # remembered: no second try of the batch route


async def test_an_unreachable_agent_is_a_connect_error_for_every_task(
    transport: BatchingTransport,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    a, b = await asyncio.gather(
        transport.post(url, "/v1/tasks", task("a")), transport.post(url, "/v1/tasks", task("b"))
    )
    assert a.outcome is Outcome.CONNECT_ERROR and b.outcome is Outcome.CONNECT_ERROR


async def test_a_batch_too_large_for_the_agent_is_split(
    agent: Agent, transport: BatchingTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batching, "MAX_BYTES", 4096)
    big = "x" * 1500
    deliveries = await asyncio.gather(
        *(transport.post(agent.url, "/v1/tasks", task(f"t{i}", payload=big)) for i in range(8))
    )
    assert all(d.outcome is Outcome.OK for d in deliveries)
    assert len(agent.batches) > 1 and sum(len(b) for b in agent.batches) == 8
    assert all(len(json.dumps({"tasks": b})) <= 4096 for b in agent.batches)


async def test_a_batch_holds_at_most_max_tasks(
    agent: Agent, transport: BatchingTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batching, "MAX_TASKS", 4)
    await asyncio.gather(
        *(transport.post(agent.url, "/v1/tasks", task(f"t{i}")) for i in range(10))
    )
    assert [len(b) for b in agent.batches] == [4, 4, 2]


async def test_other_paths_are_plain_calls(agent: Agent, transport: BatchingTransport) -> None:
    one = {"taskUid": "z", "attempt": 1, "taskType": "echo", "payload": 1, "metadata": {}}
    delivery = await transport.post(agent.url, "/v1/tasks/batch", {"tasks": [one]})
    assert delivery.outcome is Outcome.OK
    assert delivery.body == {"results": [{"taskUid": "z", "attempt": 1, "result": 1}]}
