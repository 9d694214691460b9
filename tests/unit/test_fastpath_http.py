"""The fast path's HTTP contract on loopback: POST /v1/tasks, GET /v1/tasks/{id} and
POST /v1/tasks/{id}/result served by the mesh API with a real Coordinator, against a
stand-in agent (plain aiohttp, answering by task type) and in-memory auth state.

Every request error names its field; every refusal has its code."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from agent_mesh.auth.audit import AuditLog
from agent_mesh.auth.authority import credential_hash
from agent_mesh.auth.tokens import TokenVerifier
from agent_mesh.coordinator import Coordinator
from agent_mesh.devcluster.ports import free_port
from agent_mesh.domain.acl import PolicyIndex, policy_from_spec
from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.clock import SystemClock
from agent_mesh.domain.egress import EgressPolicy
from agent_mesh.domain.health import HealthStatus
from agent_mesh.domain.tasks import TaskPhase, TaskState
from agent_mesh.mesh.callbacks import CallbackNotifier
from agent_mesh.mesh.fastpath import FastPath
from agent_mesh.mesh.task_results import ResultStore
from agent_mesh.mesh.task_wire import parse_submission
from agent_mesh.transport.egress import EgressGuard
from tests.support.memory_mesh import fast_path_served, memory_authority
from tests.support.stand_ins import serving
from tests.support.waiting import wait_for_async

CREDENTIAL = "fast-path-credential"
NS = "ns"


@dataclass
class StandIn:
    """An agent at `url`: `echo` answers its payload, `later` answers 202 (the result is
    posted later), `fail` answers 500, `slow` sleeps payload seconds."""

    url: str
    later: list[dict[str, Any]] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)


async def _agent_app(stand_in: StandIn) -> web.Application:
    async def tasks(request: web.Request) -> web.Response:
        body = await request.json()
        stand_in.seen.append(body)
        stand_in.authorizations.append(request.headers.get("Authorization", ""))
        kind = body["taskType"]
        if kind == "later":
            stand_in.later.append(body)
            return web.Response(status=202)
        if kind == "fail":
            return web.json_response(
                {"error": {"code": "TaskFailed", "message": "boom", "field": None}}, status=500
            )
        if kind == "slow":
            await asyncio.sleep(float(body["payload"]))
        return web.json_response(
            {"taskUid": body["taskUid"], "attempt": body["attempt"], "result": body["payload"]}
        )

    app = web.Application()
    app.router.add_post("/v1/tasks", tasks)
    return app


def _record(agent_id: str, agent_type: str, endpoint: str | None = None, **kw: Any) -> AgentRecord:
    return AgentRecord(
        namespace=kw.pop("namespace", NS),
        name=agent_id,
        uid=f"uid-{agent_id}",
        agent_id=agent_id,
        agent_type=agent_type,
        capabilities=kw.pop("capabilities", ("echo",)),
        service_account=None,
        credential_hash=credential_hash(CREDENTIAL),
        external=True,
        endpoint=endpoint,
        health=HealthStatus.HEALTHY,
        max_concurrent_tasks=kw.pop("max_concurrent_tasks", 1000),
        **kw,
    )


class FakeMeshTasks:
    """MeshTasks in memory: a created task is handed to the coordinator as the watch
    would hand it."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.refuse: str | None = None

    async def create(self, namespace: str, spec: dict[str, Any], submitter: str) -> dict[str, Any]:
        from agent_mesh.domain.errors import ValidationError

        if self.refuse is not None:
            raise ValidationError(self.refuse, field="spec")
        n = len(self.objects)
        body = {
            "metadata": {
                "name": f"task-{n}",
                "namespace": namespace,
                "uid": f"durable-uid-{n}",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"agentmesh.io/submitted-by": submitter},
            },
            "spec": spec,
        }
        self.objects[(namespace, f"task-{n}")] = body
        self.coordinator.observe(body)
        return body

    async def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((namespace, name))


@dataclass
class Mesh:
    client: TestClient  # type: ignore[type-arg]
    coordinator: Coordinator
    fast: FastPath
    agent: StandIn
    meshtasks: FakeMeshTasks
    tokens: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def post(self, who: str, body: Any, path: str = "/v1/tasks") -> tuple[int, Any]:
        response = await self.client.post(path, json=body, headers=self.auth(who))
        return response.status, await response.json()

    async def get(self, who: str, key: str) -> tuple[int, Any]:
        response = await self.client.get(f"/v1/tasks/{key}", headers=self.auth(who))
        return response.status, await response.json()


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    stand_in = StandIn(f"http://127.0.0.1:{free_port()}")
    port = int(stand_in.url.rsplit(":", 1)[1])
    async with serving(await _agent_app(stand_in), port):
        clock = SystemClock()
        registry = AgentRegistry()
        agents = [
            _record("w1", "worker", stand_in.url),
            _record("w2", "worker", capabilities=("other",)),
            _record("boss", "orchestrator", capabilities=()),
            _record("mon", "monitor", capabilities=()),
            _record("reader", "reader", capabilities=()),
            _record("far", "orchestrator", capabilities=(), namespace="other"),
        ]
        for record in agents:
            registry.upsert(record)
        policies = PolicyIndex()
        spec = {"agentType": "reader", "allowedActions": ["read"], "allowedResources": ["tasks"]}
        policies.upsert(NS, "reader", dt.datetime.now(dt.UTC), policy_from_spec(NS, "reader", spec))
        audit = AuditLog(clock=clock)
        authority = await memory_authority(registry, clock, audit, policies=policies)
        loopback = EgressGuard(EgressPolicy(allow_loopback=True))  # the callbacks' servers
        built: list[FakeMeshTasks] = []

        def fast_path(coordinator: Coordinator) -> FastPath:
            built.append(FakeMeshTasks(coordinator))
            results = ResultStore(max_entries=100)
            return FastPath(coordinator, built[0], results, CallbackNotifier(guard=loopback))

        async with fast_path_served(authority, agents, fast_path, max_body_bytes=1024 * 1024) as (
            client,
            fast,
        ):
            tokens = {}
            for record in agents:
                response = await client.post(
                    "/v1/token",
                    json={
                        "namespace": record.namespace,
                        "agentId": record.agent_id,
                        "credential": CREDENTIAL,
                    },
                )
                tokens[record.agent_id] = (await response.json())["token"]
            yield Mesh(client, fast.coordinator, fast, stand_in, built[0], tokens)


def _task(**spec: Any) -> dict[str, Any]:
    return {"taskType": "echo", "requiredCapabilities": ["echo"], **spec}


# --- submitting and reading back ----------------------------------------------------------


async def test_one_task_synchronously_returns_its_result(mesh: Mesh) -> None:
    status, body = await mesh.post("boss", _task(payload={"x": 1}, metadata={"trace": "t1"}))
    assert status == 200, body
    assert body["phase"] == "Completed"
    assert body["result"] == {"x": 1}
    assert body["agentId"] == "w1"
    assert body["attempt"] == 1
    assert body["namespace"] == NS
    assert len(body["id"]) == 32
    assert mesh.agent.seen[-1]["metadata"] == {"trace": "t1"}


async def test_the_dispatch_token_is_bound_to_the_agent_and_expires_with_the_attempt(
    mesh: Mesh,
) -> None:
    authority = mesh.coordinator.authority
    status, _ = await mesh.post("boss", _task(payload=1, timeoutSeconds=20))
    assert status == 200
    sent = time.time()
    verifier = TokenVerifier(
        authority.keyring, authority.clock, authority.revocations, audience=f"{NS}/w1"
    )
    token = mesh.agent.authorizations[-1].removeprefix("Bearer ")
    claims = verifier.verify(token)
    assert (claims.sub, claims.namespace, claims.aud) == ("agent-mesh-operator", NS, f"{NS}/w1")
    margin = authority.settings.dispatch_token_margin.total_seconds()
    assert claims.exp <= sent + 20 + margin
    assert claims.exp - claims.iat <= 20 + margin
    await mesh.post("boss", _task(payload=2, timeoutSeconds=20))
    assert mesh.agent.authorizations[-1] == f"Bearer {token}"  # reused, not signed again


async def test_a_batch_answers_every_task_in_request_order(mesh: Mesh) -> None:
    tasks = [_task(payload=i) for i in range(50)]
    status, body = await mesh.post("w2", {"tasks": tasks})
    assert status == 200
    assert [t["result"] for t in body["tasks"]] == list(range(50))
    assert len({t["id"] for t in body["tasks"]}) == 50


async def test_async_answers_ids_at_once_and_get_returns_the_result(mesh: Mesh) -> None:
    status, body = await mesh.post("boss", {"tasks": [_task(payload="a")], "wait": False})
    assert status == 202
    key = body["tasks"][0]["id"]
    assert body["tasks"][0]["phase"] in ("Pending", "Running")

    async def completed() -> tuple[int, Any] | None:
        status, got = await mesh.get("boss", key)
        return (status, got) if got.get("phase") == "Completed" else None

    status, got = await wait_for_async("the task to complete", completed, 5, 0.01)
    assert status == 200
    assert got["result"] == "a"


async def test_a_failed_task_answers_its_error(mesh: Mesh) -> None:
    status, body = await mesh.post("boss", _task(taskType="fail", retries=0))
    assert status == 200
    assert body["phase"] == "Failed"
    assert "boom" in body["error"]


async def test_the_wait_bound_answers_what_is_known(mesh: Mesh) -> None:
    started = time.monotonic()
    status, body = await mesh.post("boss", _task(taskType="slow", payload=5, waitSeconds=0.2))
    assert time.monotonic() - started < 3
    assert status == 202
    assert body["phase"] == "Running" and "result" not in body


async def test_unknown_task_is_404(mesh: Mesh) -> None:
    status, body = await mesh.get("boss", "f" * 32)
    assert status == 404
    assert body["error"]["field"] == "id"


class _EndingCoordinator:
    """What the fast path asks of its coordinator, with the end of a task in the test's
    hands: the task is gone from it the moment its future resolves, as the real one
    forgets an in-memory task in the same step."""

    def __init__(self) -> None:
        self.clock = SystemClock()
        self.tracked: dict[str, tuple[TaskState, asyncio.Future[TaskState]]] = {}

    async def submit(self, state: TaskState) -> asyncio.Future[TaskState]:
        self.tracked[state.key] = (state, asyncio.get_running_loop().create_future())
        return self.tracked[state.key][1]

    def get(self, key: str) -> TaskState | None:
        return self.tracked[key][0] if key in self.tracked else None

    def complete(self, key: str, result: Any) -> None:
        state, ended = self.tracked.pop(key)
        state.phase, state.result = TaskPhase.COMPLETED, result
        ended.set_result(state)


async def test_a_task_read_back_the_moment_it_ends_is_found_with_its_result() -> None:
    """Between the end of a task (gone from the coordinator) and the loop keeping its
    answer, a read used to answer 404 "no task" (a client polling GET /v1/tasks/{id}
    under load saw it)."""
    coordinator = _EndingCoordinator()
    fast = FastPath(cast(Coordinator, coordinator))
    body = {"tasks": [_task(payload="a")], "wait": False}
    [ticket] = await fast.submit(parse_submission(body, 100), NS, "boss")
    coordinator.complete(ticket.key, "a")
    found = await fast.find(ticket.key)  # no await suspends in between: the gap itself
    assert found is not None
    assert (found.namespace, found.answer["phase"], found.answer["result"]) == (
        NS,
        "Completed",
        "a",
    )
    await asyncio.sleep(0)  # the loop keeps the answer: found the same way after
    kept = await fast.find(ticket.key)
    assert kept is not None and json.loads(kept.answer)["result"] == "a"


async def test_a_monitor_cannot_submit_but_can_read(mesh: Mesh) -> None:
    status, body = await mesh.post("mon", _task())
    assert status == 403
    assert body["error"]["code"] == "AccessDenied"
    _, done = await mesh.post("boss", _task(payload=7))
    status, got = await mesh.get("mon", done["id"])
    assert status == 200 and got["result"] == 7


async def test_reading_tasks_without_read_results_withholds_the_result(mesh: Mesh) -> None:
    _, done = await mesh.post("boss", _task(payload=7))
    status, got = await mesh.get("reader", done["id"])
    assert status == 200
    assert got["phase"] == "Completed"
    assert "result" not in got and got["resultWithheld"] is True


async def test_submitting_to_a_namespace_out_of_reach_is_403(mesh: Mesh) -> None:
    status, body = await mesh.post("w2", _task(namespace="elsewhere"))
    assert status == 403
    assert body["error"]["code"] == "AccessDenied"


async def test_reading_a_task_of_a_namespace_out_of_reach_is_403(mesh: Mesh) -> None:
    status, done = await mesh.post("far", _task(wait=False))
    assert status == 202 and done["namespace"] == "other"
    status, body = await mesh.get("w2", done["id"])
    assert status == 403
    assert body["error"]["code"] == "AccessDenied"


async def test_without_a_token_submit_is_401(mesh: Mesh) -> None:
    response = await mesh.client.post("/v1/tasks", json=_task())
    assert response.status == 401


async def test_too_many_unfinished_tasks_is_503(mesh: Mesh) -> None:
    mesh.fast.max_outstanding = 2
    status, body = await mesh.post(
        "boss", {"tasks": [_task(taskType="slow", payload=1)] * 3, "wait": False}
    )
    assert status == 503
    assert body["error"]["code"] == "TooManyTasks"


async def test_a_task_no_agent_can_take_is_withdrawn_after_its_budget(mesh: Mesh) -> None:
    task = _task(requiredCapabilities=["nobody-has-this"], timeoutSeconds=1, retries=0)
    status, body = await mesh.post("boss", {**task, "wait": False})
    assert status == 202 and body["phase"] == "Pending"
    mesh.fast.sweep(time.monotonic() + 2)

    async def answered_failed() -> dict[str, Any] | None:
        status, got = await mesh.get("boss", body["id"])
        return got if status == 200 and got.get("phase") == "Failed" else None

    got = await wait_for_async("the withdrawn task's answer", answered_failed, within=5)
    assert "withdrawn" in got["error"] and "nobody-has-this" in got["error"]
    assert mesh.coordinator.get(body["id"]) is None


async def test_finished_answers_are_kept_only_as_long_as_the_store_allows(mesh: Mesh) -> None:
    mesh.fast.results.max_entries = 3
    _, first = await mesh.post("boss", _task(payload=0))
    await mesh.post("boss", {"tasks": [_task(payload=i) for i in range(3)]})
    status, _ = await mesh.get("boss", first["id"])
    assert status == 404


async def test_durable_task_becomes_a_meshtask_and_answers_its_result(mesh: Mesh) -> None:
    status, body = await mesh.post("boss", _task(payload={"d": 1}, durable=True))
    assert status == 200, body
    assert body["phase"] == "Completed" and body["result"] == {"d": 1}
    assert body["name"] == "task-0" and body["id"] == "durable-uid-0"
    created = mesh.meshtasks.objects[(NS, "task-0")]
    assert created["spec"]["taskType"] == "echo"
    assert "durable" not in created["spec"] and "wait" not in created["spec"]
    assert created["metadata"]["labels"]["agentmesh.io/submitted-by"] == "boss"
    status, got = await mesh.get("boss", "durable-uid-0")
    assert status == 200 and got["name"] == "task-0"


async def test_a_refused_durable_task_fails_alone_or_in_its_place_in_a_batch(mesh: Mesh) -> None:
    mesh.meshtasks.refuse = "denied by webhook"
    status, body = await mesh.post("boss", _task(durable=True))
    assert status == 400 and body["error"]["field"] == "spec"
    status, body = await mesh.post("boss", {"tasks": [_task(payload=1), _task(durable=True)]})
    assert status == 200
    assert body["tasks"][0]["result"] == 1
    assert body["tasks"][1]["phase"] == "Failed"
    assert body["tasks"][1]["error"] == "denied by webhook"


# --- callbacks ----------------------------------------------------------------------------


async def test_the_callback_receives_each_answer(mesh: Mesh) -> None:
    received: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put((request.path_qs, await request.json()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serving(app) as base:
        url = f"{base}/hook?run=7"
        status, body = await mesh.post(
            "boss", {"tasks": [_task(payload=1), _task(payload=2)], "callbackUrl": url}
        )
        assert status == 200
        got = [await asyncio.wait_for(received.get(), 5) for _ in range(2)]
        assert {path for path, _ in got} == {"/hook?run=7"}
        assert sorted(answer["result"] for _, answer in got) == [1, 2]
        assert {answer["id"] for _, answer in got} == {t["id"] for t in body["tasks"]}


async def test_a_callback_that_cannot_be_reached_does_not_fail_the_task(mesh: Mesh) -> None:
    url = f"http://127.0.0.1:{free_port()}/nobody"
    status, body = await mesh.post("boss", {**_task(payload=3), "callbackUrl": url})
    assert status == 200 and body["result"] == 3


# --- results reported later ---------------------------------------------------------------


async def _accepted_later(mesh: Mesh) -> str:
    status, body = await mesh.post("boss", _task(taskType="later", retries=0, wait=False))
    assert status == 202
    await wait_for_async(
        "the agent to accept the task for later",
        lambda: mesh.agent.later and mesh.agent.later[-1]["taskUid"] == body["id"],
        5,
        0.01,
    )
    state = mesh.coordinator.get(body["id"])
    assert state is not None and state.phase.value == "Running"
    return str(body["id"])


async def test_the_assigned_agent_reports_a_result_later(mesh: Mesh) -> None:
    key = await _accepted_later(mesh)
    path = f"/v1/tasks/{key}/result"
    status, body = await mesh.post("w1", {"attempt": 1, "result": {"late": True}}, path)
    assert status == 200, body
    assert body["accepted"] is True and body["phase"] == "Completed"
    status, got = await mesh.get("boss", key)
    assert got["result"] == {"late": True}
    status, again = await mesh.post("w1", {"attempt": 1, "result": 1}, path)
    assert status == 409 and again["error"]["code"] == "StaleAttempt"


async def test_a_null_result_is_a_result(mesh: Mesh) -> None:
    key = await _accepted_later(mesh)
    status, body = await mesh.post("w1", {"attempt": 1, "result": None}, f"/v1/tasks/{key}/result")
    assert status == 200 and body["phase"] == "Completed"


async def test_the_assigned_agent_reports_an_error_later(mesh: Mesh) -> None:
    key = await _accepted_later(mesh)
    path = f"/v1/tasks/{key}/result"
    status, body = await mesh.post("w1", {"attempt": 1, "error": "model overloaded"}, path)
    assert status == 200
    assert body["phase"] == "Failed" and "model overloaded" in body["error"]


async def test_another_agents_token_cannot_report(mesh: Mesh) -> None:
    key = await _accepted_later(mesh)
    status, body = await mesh.post("w2", {"attempt": 1, "result": 1}, f"/v1/tasks/{key}/result")
    assert status == 403
    assert body["error"]["code"] == "NotYourTask"
    denial = mesh.coordinator.audit.recent(event="acl.decision")[0]
    assert denial["decision"] == "deny" and denial["agentId"] == "w2"


async def test_a_stale_attempt_is_409(mesh: Mesh) -> None:
    key = await _accepted_later(mesh)
    status, body = await mesh.post("w1", {"attempt": 2, "result": 1}, f"/v1/tasks/{key}/result")
    assert status == 409
    assert body["error"] == {
        "code": "StaleAttempt",
        "field": "attempt",
        "message": body["error"]["message"],
    }


async def test_reporting_for_an_unknown_task_is_404(mesh: Mesh) -> None:
    status, body = await mesh.post("w1", {"attempt": 1, "result": 1}, "/v1/tasks/nope/result")
    assert status == 404 and body["error"]["field"] == "id"


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ({"result": 1}, "attempt"),
        ({"attempt": 0, "result": 1}, "attempt"),
        ({"attempt": 1}, "result"),
        ({"attempt": 1, "result": 1, "error": "x"}, "result"),
        ({"attempt": 1, "error": ""}, "error"),
        ({"attempt": 1, "result": 1, "extra": 1}, "extra"),
    ],
)
async def test_a_bad_report_names_its_field(
    mesh: Mesh, body: dict[str, Any], field_name: str
) -> None:
    status, answer = await mesh.post("w1", body, "/v1/tasks/any/result")
    assert status == 400
    assert answer["error"]["field"] == field_name


# --- validation ---------------------------------------------------------------------------

BIG = "x" * (256 * 1024)
TTL = "ttlSecondsAfterFinished"


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ({}, "taskType"),
        ([], "body"),
        ({"taskType": "Not A Name"}, "taskType"),
        (_task(priority="urgent"), "priority"),
        (_task(timeoutSeconds=0), "timeoutSeconds"),
        (_task(timeoutSeconds=86401), "timeoutSeconds"),
        (_task(retries=21), "retries"),
        (_task(retries=-1), "retries"),
        (_task(requiredCapabilities=["a", "a"]), "requiredCapabilities"),
        (_task(requiredCapabilities=["A B"]), "requiredCapabilities[0]"),
        (_task(strategy="Least Loaded"), "strategy"),
        (_task(agentSelector={"agentRef": "Not_A_Name"}), "agentSelector.agentRef"),
        (_task(agentSelector={"agentType": "x" * 64}), "agentSelector.agentType"),
        (_task(agentSelector={"labels": {"a": "x" * 64}}), "agentSelector.labels.a"),
        (_task(agentSelector={"bogus": 1}), "agentSelector.bogus"),
        (_task(metadata={"k": 1}), "metadata.k"),
        (_task(metadata={str(i): "v" for i in range(65)}), "metadata"),
        (_task(priorty="high"), "priorty"),
        (_task(ttlSecondsAfterFinished=10), "ttlSecondsAfterFinished"),
        (_task(ttlSecondsAfterFinished=-1, durable=True), "ttlSecondsAfterFinished"),
        (_task(durable="maybe"), "durable"),
        (_task(wait="maybe"), "wait"),
        (_task(waitSeconds=0), "waitSeconds"),
        (_task(waitSeconds=3601), "waitSeconds"),
        (_task(namespace="Bad_Namespace"), "namespace"),
        (_task(callbackUrl="ftp://example.com/x"), "callbackUrl"),
        (_task(callbackUrl="http:///nohost"), "callbackUrl"),
        (_task(callbackUrl="http://example.com/" + "x" * 2048), "callbackUrl"),
        ({"tasks": []}, "tasks"),
        ({"tasks": [_task()] * 1001}, "tasks"),
        ({"tasks": "echo"}, "tasks"),
        ({"tasks": [_task(), _task(timeoutSeconds="soon")]}, "tasks[1].timeoutSeconds"),
        (
            {"tasks": [_task(), _task(ttlSecondsAfterFinished=5)]},
            "tasks[1].ttlSecondsAfterFinished",
        ),
        ({"tasks": [_task()], "extra": True}, "extra"),
        ({"tasks": [_task(waitSeconds=1)]}, "tasks[0].waitSeconds"),
    ],
)
async def test_a_bad_submission_names_its_field(mesh: Mesh, body: Any, field_name: str) -> None:
    status, answer = await mesh.post("boss", body)
    assert status == 400, answer
    assert answer["error"]["field"] == field_name, answer
    assert answer["error"]["code"] == "InvalidRequest"


async def test_a_body_that_is_not_json_is_400(mesh: Mesh) -> None:
    response = await mesh.client.post("/v1/tasks", data=b"{nope", headers=mesh.auth("boss"))
    assert response.status == 400
    assert (await response.json())["error"]["field"] == "body"


async def test_an_oversized_payload_is_413_naming_it(mesh: Mesh) -> None:
    status, body = await mesh.post("boss", _task(payload=BIG))
    assert status == 413
    assert body["error"]["field"] == "payload"
    assert "262144 bytes" in body["error"]["message"]
    status, body = await mesh.post("boss", {"tasks": [_task(), _task(payload=BIG)]})
    assert status == 413
    assert body["error"]["field"] == "tasks[1].payload"


async def test_a_payload_at_the_limit_is_taken(mesh: Mesh) -> None:
    status, body = await mesh.post("boss", _task(payload="x" * (256 * 1024 - 2)))
    assert status == 200, body


async def test_an_oversized_payload_in_a_chunked_body_is_413(mesh: Mesh) -> None:
    body = json.dumps(_task(payload=BIG)).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    response = await mesh.client.post("/v1/tasks", data=chunks(), headers=mesh.auth("boss"))
    assert response.status == 413
    assert (await response.json())["error"]["field"] == "payload"
