"""The fast path against the real operator: tasks submitted over the mesh API
(`POST /v1/tasks`) run on examples/echo_worker.py processes on 127.0.0.1 and come back
with their results; durable ones become MeshTasks in the real apiserver; an agent that
takes a task with 202 reports its result later; callbacks reach a loopback server; the
SDK agent's batch route runs many tasks in one call, and an operator with batched
dispatch on sends many tasks per call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web
from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.devcluster.ports import free_port
from agent_mesh.domain.errors import ForbiddenError, ValidationError
from agent_mesh.sdk import MeshClient, TaskSpec
from agent_mesh.testing import OperatorProcess
from tests.support.agents import Mesh, mesh_fixture, running_mesh
from tests.support.cluster import Cluster
from tests.support.mesh_api import (
    call,
    error_of,
    exchange,
    external_agent,
    token_for_agent,
)
from tests.support.namespaces import (
    family,
    fresh_namespace,
)
from tests.support.operators import own_operator
from tests.support.stand_ins import serving
from tests.support.waiting import wait_for_async

WORKERS = ("echo-1", "echo-2")
PLAN = [("echo_worker.py", agent_id, "worker", ["echo"]) for agent_id in WORKERS]


mesh = mesh_fixture("fast-", PLAN)
"""A namespace with two echo workers running (capability echo)."""


@pytest.fixture
async def conductor(mesh: Mesh) -> AsyncIterator[MeshClient]:
    async with mesh.client("orchestrator") as mesh_client:
        yield mesh_client


def echo(payload: Any, **spec: Any) -> TaskSpec:
    return TaskSpec("echo", payload, capabilities=["echo"], **spec)


@pytest.mark.smoke
async def test_one_synchronous_task_returns_its_result(conductor: MeshClient) -> None:
    answer = await conductor.submit("echo", {"hello": "mesh"}, capabilities=["echo"])
    assert answer.completed, answer
    assert answer.result == {"hello": "mesh"}
    assert answer.agent_id in WORKERS
    assert answer.attempt == 1
    assert answer.name is None  # in memory: no MeshTask


async def test_a_batch_of_100_returns_100_results_in_order(conductor: MeshClient) -> None:
    answers = await conductor.submit_many([echo({"n": i}) for i in range(100)])
    assert [a.result for a in answers] == [{"n": i} for i in range(100)]
    assert all(a.completed for a in answers)
    assert len({a.id for a in answers}) == 100
    assert {a.agent_id for a in answers} == set(WORKERS)  # both workers took a share


async def test_async_returns_ids_and_get_returns_the_results(conductor: MeshClient) -> None:
    tasks = [TaskSpec("sleep", {"seconds": 0.3}, capabilities=["echo"]) for _ in range(3)]
    submitted = await conductor.submit_many(tasks, wait=False)
    assert all(not a.finished for a in submitted)

    async def results() -> list[Any] | None:
        answers = [await conductor.task(str(a.id)) for a in submitted]
        return answers if all(a.finished for a in answers) else None

    answers = await wait_for_async("every submitted task to finish", results, within=30)
    assert all(a.completed for a in answers)
    assert all(a.result["slept"] == 0.3 for a in answers)


async def test_a_durable_task_is_a_meshtask_that_completes(
    mesh: Mesh, conductor: MeshClient
) -> None:
    answer = await conductor.submit(
        echo({"keep": True}, durable=True, ttl_seconds_after_finished=600)
    )
    assert answer.completed, answer
    assert answer.result == {"keep": True}
    assert answer.name and answer.name.startswith("task-")
    me = (await conductor.identity()).agent_id

    def completed() -> dict[str, Any] | None:
        body = mesh.cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, mesh.namespace, "meshtasks", answer.name
        )
        return body if (body.get("status") or {}).get("phase") == "Completed" else None

    body = await wait_for_async("the durable task's status to say Completed", completed)
    assert body["metadata"]["uid"] == answer.id
    assert body["metadata"]["labels"]["agentmesh.io/submitted-by"] == me
    assert body["spec"]["ttlSecondsAfterFinished"] == 600
    assert body["status"]["result"] == {"keep": True}
    again = await conductor.task(str(answer.id))  # from the apiserver, once written
    assert again.completed and again.result == {"keep": True} and again.name == answer.name


async def test_a_finished_meshtask_is_deleted_by_the_operator_after_its_ttl(
    mesh: Mesh, conductor: MeshClient
) -> None:
    answer = await conductor.submit(
        echo({"brief": True}, durable=True, ttl_seconds_after_finished=1)
    )
    assert answer.completed and answer.name, answer

    def deleted() -> bool:
        try:
            mesh.cluster.custom.get_namespaced_custom_object(
                GROUP, VERSION, mesh.namespace, "meshtasks", answer.name
            )
        except client.ApiException as error:
            return error.status == 404
        return False

    await wait_for_async("the operator to delete the finished MeshTask", deleted, within=30)
    assert f"deleted finished task {mesh.namespace}/{answer.name}" in mesh.operator.logs()


async def test_a_durable_task_submitted_async_can_be_read_back(
    mesh: Mesh, conductor: MeshClient
) -> None:
    submitted = await conductor.submit(echo(7, durable=True), wait=False)
    assert submitted.name and submitted.id  # the MeshTask exists; it may already be running

    async def done() -> Any:
        answer = await conductor.task(str(submitted.id))
        return answer if answer.finished else None

    answer = await wait_for_async("the durable task to finish", done, within=30)
    assert answer.completed and answer.result == 7


async def test_a_worker_may_submit_a_monitor_may_not(mesh: Mesh) -> None:
    async with mesh.client("worker") as worker:
        assert (await worker.submit(echo("w"))).result == "w"
    async with mesh.client("monitor") as monitor:
        with pytest.raises(ForbiddenError) as refused:
            await monitor.submit(echo("m"))
    assert refused.value.code == "AccessDenied"


async def test_a_bad_submission_is_refused_naming_the_field(conductor: MeshClient) -> None:
    with pytest.raises(ValidationError) as refused:
        await conductor.submit_many([echo(1), echo(2, priority="urgent")])
    assert refused.value.field == "tasks[1].priority"


def test_an_oversized_payload_is_413(mesh: Mesh) -> None:
    token = mesh.token("orchestrator")
    big = {"taskType": "echo", "payload": "x" * (300 * 1024)}
    response = call(mesh.operator, "POST", "/v1/tasks", token, json=big)
    assert response.status_code == 413
    assert error_of(response)["field"] == "payload"


# --- an agent that answers later ----------------------------------------------------------


@dataclass
class LateAgent:
    """A stand-in agent registered as a MeshAgent: it takes every task with 202 and keeps
    it; the test posts the result with the agent's own token."""

    agent_id: str
    token: str
    taken: asyncio.Queue[dict[str, Any]]


@pytest.fixture
async def late(mesh: Mesh) -> AsyncIterator[LateAgent]:
    agent_id = f"late-{uuid.uuid4().hex[:6]}"
    port = free_port()
    credential = external_agent(
        mesh.cluster,
        mesh.namespace,
        agent_id,
        "worker",
        capabilities=["later"],
        endpoint=f"http://127.0.0.1:{port}",
    )
    taken: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def tasks(request: web.Request) -> web.Response:
        await taken.put(await request.json())
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/v1/tasks", tasks)
    async with serving(app, port):
        token = exchange(mesh.operator, mesh.namespace, agent_id, credential).json()["token"]
        beat = call(
            mesh.operator,
            "POST",
            f"/v1/agents/{mesh.namespace}/{agent_id}/heartbeat",
            token,
            json={"activeTasks": 0},
        )
        assert beat.status_code == 200, beat.text
        yield LateAgent(agent_id, token, taken)


async def test_an_agent_that_took_a_task_with_202_reports_its_result(
    mesh: Mesh, conductor: MeshClient, late: LateAgent
) -> None:
    submitted = await conductor.submit(
        "later", {"q": 1}, capabilities=["later"], retries=0, wait=False
    )
    dispatched = await asyncio.wait_for(late.taken.get(), 30)
    assert dispatched["taskUid"] == submitted.id and dispatched["attempt"] == 1
    path = f"/v1/tasks/{submitted.id}/result"
    async with httpx.AsyncClient(
        base_url=mesh.operator.mesh_url, timeout=10, verify=mesh.operator.tls
    ) as http:

        async def report(token: str, attempt: int, result: Any) -> httpx.Response:
            body = {"attempt": attempt, "result": result}
            return await http.post(path, json=body, headers={"Authorization": f"Bearer {token}"})

        refused = await report(mesh.token("worker"), 1, "forged")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "NotYourTask"
        stale = await report(late.token, 2, "late")
        assert stale.status_code == 409
        assert stale.json()["error"]["code"] == "StaleAttempt"
        accepted = await report(late.token, 1, {"a": 42})
        assert accepted.status_code == 200, accepted.text
    answer = await conductor.task(str(submitted.id))
    assert answer.completed and answer.result == {"a": 42} and answer.agent_id == late.agent_id


# --- callbacks ----------------------------------------------------------------------------


async def test_the_callback_url_is_called_with_each_answer(conductor: MeshClient) -> None:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        assert "Authorization" not in request.headers  # never the operator's token
        await received.put(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/done", hook)
    async with serving(app) as base:
        submitted = await conductor.submit_many(
            [echo(1), echo(2)], wait=False, callback_url=f"{base}/done"
        )
        got = [await asyncio.wait_for(received.get(), 30) for _ in submitted]
    assert {a["id"] for a in got} == {a.id for a in submitted}
    assert sorted(a["result"] for a in got) == [1, 2]
    assert {a["phase"] for a in got} == {"Completed"}


# --- the SDK agent's batch route ----------------------------------------------------------


async def test_the_sdk_agent_runs_a_batch_in_one_call(mesh: Mesh) -> None:
    token = token_for_agent(mesh.operator, mesh.token("orchestrator"), mesh.namespace, "echo-1")
    url = mesh.agents["echo-1"].url
    tasks = [
        {"taskUid": "b-1", "attempt": 1, "taskType": "echo", "payload": 1},
        {"taskUid": "b-2", "attempt": 1, "taskType": "nope", "payload": 2},
        {"taskUid": "b-1", "attempt": 1, "taskType": "echo", "payload": "again"},
    ]
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{url}/v1/tasks/batch",
            json={"tasks": tasks},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert results[0] == {"taskUid": "b-1", "attempt": 1, "result": 1}
        assert results[1]["error"]["code"] == "NotFound"
        assert results[2] == {"taskUid": "b-1", "attempt": 1, "result": 1}  # de-duplicated
        anonymous = await http.post(f"{url}/v1/tasks/batch", json={"tasks": tasks})
        assert anonymous.status_code == 401
        empty = await http.post(
            f"{url}/v1/tasks/batch",
            json={"tasks": []},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert empty.status_code == 400
        assert empty.json()["error"]["field"] == "tasks"


# --- an operator with batched dispatch ----------------------------------------------------

BATCH_FAMILY = family("amb")


@pytest.fixture(scope="module")
def batched(
    cluster: Cluster, crds: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    """An operator of its own with AGENT_MESH_BATCH_DISPATCH on, and two echo workers."""
    logs = tmp_path_factory.mktemp("batched")
    batching = {"AGENT_MESH_BATCH_DISPATCH": "true"}
    with (
        own_operator(cluster, logs / "operator.log", BATCH_FAMILY, extra_env=batching) as own,
        fresh_namespace(cluster, BATCH_FAMILY) as namespace,
        running_mesh(cluster, own, namespace, PLAN, logs) as mesh,
    ):
        yield mesh


def _dispatch_calls(operator: OperatorProcess) -> float:
    text = httpx.get(f"{operator.mesh_url}/metrics", timeout=10, verify=operator.tls).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("agentmesh_transport_requests_total{")
    )


async def test_batched_dispatch_runs_a_batch_in_few_calls(batched: Mesh) -> None:
    before = _dispatch_calls(batched.operator)
    async with batched.client("orchestrator") as conductor:
        answers = await conductor.submit_many([echo({"n": i}) for i in range(200)])
        slow_and_quick = await conductor.submit_many(
            [TaskSpec("sleep", {"seconds": 2}, capabilities=["echo"]), echo("quick")],
            wait_seconds=1,
        )
    assert [a.result for a in answers] == [{"n": i} for i in range(200)]
    assert {a.agent_id for a in answers} == set(WORKERS)
    calls = _dispatch_calls(batched.operator) - before
    assert 0 < calls < 100, calls  # 200 tasks, far fewer calls (plus the health events)
    # the quick task's answer did not wait for the slow one sent beside it
    assert not slow_and_quick[0].finished
    assert slow_and_quick[1].completed and slow_and_quick[1].result == "quick"
