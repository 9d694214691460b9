"""The coordinator's durable path, against an in-memory status writer and fake agents:
coalesced status writes, the write-ahead before dispatch, conflict adoption, tombstones
against late watch events, reconciliation after a restart, objects gone mid-write, write
errors, and tasks forgotten mid-dispatch.

Time is a FakeClock the tests move; the scheduler is driven by calling `schedule()`, so
nothing waits on a real timer except the coalescing window where a test says so.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.auth.audit import AuditLog
from agent_mesh.coordinator import Coordinator
from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.clock import FakeClock, rfc3339
from agent_mesh.domain.egress import EgressClass
from agent_mesh.domain.health import HealthStatus, HealthTracker
from agent_mesh.domain.retry import RetryPolicy
from agent_mesh.domain.task_message import TaskRequest
from agent_mesh.domain.tasks import TaskState
from agent_mesh.kube.task_status import WriteResult
from agent_mesh.transport.client import Delivery, Outcome
from tests.support.memory_mesh import memory_authority
from tests.support.waiting import wait_for_async

NS = "ns"
GRACE = dt.timedelta(seconds=30)


# --- the ports, in memory -----------------------------------------------------------------


@dataclass
class Write:
    name: str
    status: dict[str, Any]
    resource_version: str | None


class FakeStatusWriter:
    """The TaskWriter port as the apiserver answers it: each MeshTask is an object with a
    resourceVersion; a write on an older version is a conflict (answered with the object
    as stored), a write to a deleted object finds it gone. Records every write tried."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.objects: dict[str, dict[str, Any]] = {}
        self.writes: list[Write] = []
        self.deleted: list[str] = []
        self.version = 0
        self.errors: list[Exception] = []
        """Raised by the next writes, one each."""
        self.hold: asyncio.Event | None = None
        """While set to an unset Event, writes wait for it."""
        self.delete_errors: list[Exception] = []
        """Raised by the next deletions, one each."""
        self.delete_tries = 0

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store a MeshTask as `kubectl apply` would; the body the watch delivers."""
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = self._next_version()
        self.objects[stored["metadata"]["name"]] = stored
        return copy.deepcopy(stored)

    def someone_writes(self, name: str, **status: Any) -> None:
        """Another writer (another operator, a user) patches the status."""
        stored = self.objects[name]
        stored["status"] = {**(stored.get("status") or {}), **status}
        stored["metadata"]["resourceVersion"] = self._next_version()

    def stored(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[name])

    def phases(self) -> list[str]:
        return [w.status["phase"] for w in self.writes]

    async def write(
        self, state: TaskState, status: dict[str, Any], resource_version: str | None
    ) -> tuple[WriteResult, dict[str, Any] | None]:
        assert state.name is not None
        self.writes.append(Write(state.name, copy.deepcopy(status), resource_version))
        if self.hold is not None:
            await self.hold.wait()
        if self.errors:
            raise self.errors.pop(0)
        stored = self.objects.get(state.name)
        if stored is None:
            return WriteResult.GONE, None
        if resource_version and resource_version != stored["metadata"]["resourceVersion"]:
            return WriteResult.CONFLICT, copy.deepcopy(stored)
        merged = {**(stored.get("status") or {}), **status}
        stored["status"] = {k: v for k, v in merged.items() if v is not None}
        stored["metadata"]["resourceVersion"] = self._next_version()
        self.log.append(f"wrote {status['phase']} {status['agentId']} attempt {status['attempt']}")
        return WriteResult.WRITTEN, copy.deepcopy(stored)

    async def delete(self, state: TaskState) -> None:
        assert state.name is not None
        self.delete_tries += 1
        if self.delete_errors:
            raise self.delete_errors.pop(0)
        self.deleted.append(state.name)
        self.objects.pop(state.name, None)

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)


@dataclass
class Call:
    endpoint: str
    payload: TaskRequest
    token: str | None
    timeout_seconds: float | None
    egress: EgressClass
    cancelled: bool = False


Answer = Callable[[Call], Awaitable[Delivery]]


async def echo(call: Call) -> Delivery:
    return Delivery(call.endpoint, Outcome.OK, 1, status=200, body={"result": call.payload.payload})


@dataclass
class FakeAgents:
    """The coordinator's transport: records each call; `answer` decides the Delivery."""

    log: list[str]
    calls: list[Call] = field(default_factory=list)
    answer: Answer = echo

    async def post(
        self,
        endpoint: str,
        path: str,
        payload: Any,
        *,
        token: str | None = None,
        timeout_seconds: float | None = None,
        retries: int | None = None,
        egress: EgressClass = EgressClass.DERIVED,
    ) -> Delivery:
        assert path == "/v1/tasks"
        call = Call(endpoint, payload, token, timeout_seconds, egress)
        self.calls.append(call)
        self.log.append(f"sent {payload.task_uid} to {endpoint} attempt {payload.attempt}")
        try:
            return await self.answer(call)
        except asyncio.CancelledError:
            call.cancelled = True
            raise

    async def close(self) -> None:
        pass


def answering(status: int, body: Any = None) -> Answer:
    async def answer(call: Call) -> Delivery:
        outcome = Outcome.OK if status < 400 else Outcome.HTTP_ERROR
        return Delivery(call.endpoint, outcome, 1, status=status, body=body)

    return answer


def never_answering() -> tuple[Answer, asyncio.Event]:
    release = asyncio.Event()

    async def answer(call: Call) -> Delivery:
        await release.wait()
        return await echo(call)

    return answer, release


# --- the coordinator under test --------------------------------------------------------------


@dataclass
class Mesh:
    coordinator: Coordinator
    clock: FakeClock
    registry: AgentRegistry
    writer: FakeStatusWriter
    agents: FakeAgents
    log: list[str]

    def agent(self, agent_id: str, *, slots: int = 10) -> AgentRecord:
        record = AgentRecord(
            namespace=NS,
            name=agent_id,
            uid=f"uid-{agent_id}",
            agent_id=agent_id,
            agent_type="worker",
            capabilities=("echo",),
            service_account=None,
            credential_hash=None,
            external=True,
            endpoint=f"http://{agent_id}.agents.test",
            health=HealthStatus.HEALTHY,
            max_concurrent_tasks=slots,
        )
        self.registry.upsert(record)
        self.coordinator.agent_seen(record)
        return record

    def task(self, name: str, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
        """A MeshTask stored in the apiserver, as the watch delivers it."""
        body: dict[str, Any] = {
            "metadata": {
                "name": name,
                "namespace": NS,
                "uid": f"uid-{name}",
                "generation": 1,
                "creationTimestamp": rfc3339(self.clock.now()),
            },
            "spec": {
                "taskType": "echo",
                "requiredCapabilities": ["echo"],
                "payload": {"n": name},
                "timeoutSeconds": 300,
                "retries": 3,
                **spec,
            },
        }
        if status is not None:
            body["status"] = status
        return self.writer.create(body)

    def running(self, agent_id: str, attempt: int, started_ago: float) -> dict[str, Any]:
        """The status a previous operator left: attempt `attempt` running on `agent_id`,
        earlier attempts failed on another agent."""
        now = self.clock.now()
        earlier = [
            {
                "agentId": "w0",
                "startedAt": rfc3339(now - dt.timedelta(seconds=started_ago + 5)),
                "finishedAt": rfc3339(now - dt.timedelta(seconds=started_ago + 1)),
                "outcome": "Failed",
                "error": "boom",
            }
            for _ in range(attempt - 1)
        ]
        started = rfc3339(now - dt.timedelta(seconds=started_ago))
        return {
            "phase": "Running",
            "attempt": attempt,
            "agentId": agent_id,
            "assignedAt": started,
            "startedAt": started,
            "attempts": [*earlier, {"agentId": agent_id, "startedAt": started}],
        }

    def sent(self) -> list[tuple[str, int]]:
        """(agent host, attempt) of every call made to an agent."""
        return [
            (c.endpoint.removeprefix("http://").split(".")[0], c.payload.attempt)
            for c in self.agents.calls
        ]


@pytest.fixture
def coalesce() -> float:
    """The coalescing window: none, unless a test parametrizes one."""
    return 0.0


@pytest.fixture
async def mesh(coalesce: float) -> AsyncIterator[Mesh]:
    clock = FakeClock()
    registry = AgentRegistry()
    audit = AuditLog(clock=clock)
    authority = await memory_authority(registry, clock, audit)
    log: list[str] = []
    writer = FakeStatusWriter(log)
    agents = FakeAgents(log)
    coordinator = Coordinator(
        registry=registry,
        tracker=HealthTracker(),
        authority=authority,
        audit=audit,
        clock=clock,
        writer=writer,
        transport=agents,
        policy=RetryPolicy(jitter=0),
        coalesce_seconds=coalesce,
        write_retry_seconds=0.01,
        reconcile_grace=GRACE,
    )
    yield Mesh(coordinator, clock, registry, writer, agents, log)
    await coordinator.close()


async def until(condition: Callable[[], bool], what: str, within: float = 2.0) -> None:
    """Let the loop run until `condition` holds; fail naming `what` after `within` s."""
    await wait_for_async(what, condition, within, 0.001)


def phase_of(mesh: Mesh, key: str) -> str | None:
    state = mesh.coordinator.get(key)
    return state.phase.value if state is not None else None


async def settle(turns: int = 50) -> None:
    """Let every ready task run (for asserting that something did not happen)."""
    for _ in range(turns):
        await asyncio.sleep(0)


# --- coalescing -------------------------------------------------------------------------------


@pytest.mark.parametrize("coalesce", [3600.0])
async def test_pending_and_waiting_changes_before_placement_are_never_written_on_their_own(
    mesh: Mesh,
) -> None:
    mesh.coordinator.observe(mesh.task("t1"))
    mesh.coordinator.schedule()  # no agent: waits, NoCapableAgent
    state = mesh.coordinator.get("uid-t1")
    assert state is not None and state.waiting is not None
    assert state.waiting[0] == "NoCapableAgent"
    await settle()
    assert mesh.writer.writes == []  # Pending and its reason wait in the window

    mesh.agent("w1")
    mesh.coordinator.schedule()
    await until(lambda: mesh.agents.calls, "the agent is called")

    # the assignment cut the window short: one write, naming the agent
    first = mesh.writer.writes[0]
    assert (first.status["phase"], first.status["agentId"], first.status["attempt"]) == (
        "Running",
        "w1",
        1,
    )
    assert mesh.writer.phases() == ["Running"]  # the Completed write waits in its window


@pytest.mark.parametrize("coalesce", [0.05])
async def test_a_task_run_costs_two_writes_the_assignment_and_the_result(mesh: Mesh) -> None:
    mesh.coordinator.observe(mesh.task("t1"))
    mesh.coordinator.schedule()  # no agent yet: waits
    mesh.agent("w1")
    mesh.coordinator.schedule()
    await until(lambda: "Completed" in mesh.writer.phases(), "the result is written")
    await settle()
    assert mesh.writer.phases() == ["Running", "Completed"]
    assert mesh.writer.stored("t1")["status"]["result"] == {"n": "t1"}


@pytest.mark.parametrize("coalesce", [3600.0])
async def test_a_failed_attempt_and_its_retry_inside_the_window_cost_one_write(
    mesh: Mesh,
) -> None:
    mesh.agent("w1")
    mesh.agents.answer = answering(500, {"error": {"code": "TaskFailed", "message": "boom"}})
    mesh.coordinator.observe(mesh.task("t1"))
    mesh.coordinator.schedule()
    await until(lambda: len(mesh.agents.calls) == 1, "attempt 1 is sent")
    await until(lambda: phase_of(mesh, "uid-t1") == "Pending", "attempt 1 fails")
    assert mesh.writer.phases() == ["Running"]  # Pending (RetryScheduled) waits in the window

    mesh.agents.answer = echo
    mesh.clock.advance(1)  # the backoff before retry 1 (no jitter)
    mesh.coordinator.schedule()
    await until(lambda: len(mesh.agents.calls) == 2, "attempt 2 is sent")

    assert len(mesh.writer.writes) == 2
    second = mesh.writer.writes[1].status
    assert (second["phase"], second["attempt"]) == ("Running", 2)
    assert [a.get("outcome") for a in second["attempts"]] == ["Failed", None]


# --- write-ahead ------------------------------------------------------------------------------


async def test_the_agent_is_not_called_until_status_names_its_agent_and_attempt(
    mesh: Mesh,
) -> None:
    mesh.agent("w1")
    mesh.writer.hold = asyncio.Event()
    mesh.coordinator.observe(mesh.task("t1"))
    mesh.coordinator.schedule()
    await until(lambda: mesh.writer.writes, "the assignment is being written")
    await settle()
    assert mesh.agents.calls == []  # the write has not landed

    mesh.writer.hold.set()
    await until(lambda: mesh.agents.calls, "the agent is called")
    assert mesh.log[:2] == [
        "wrote Running w1 attempt 1",
        "sent uid-t1 to http://w1.agents.test attempt 1",
    ]
    call = mesh.agents.calls[0]
    claims = jwt.decode(call.token or "", options={"verify_signature": False})
    assert claims["aud"] == f"{NS}/w1"  # a token addressed to that agent alone
    assert call.egress is EgressClass.DECLARED  # spec.endpoint, chosen by a user


async def test_an_attempt_whose_time_ran_out_while_its_write_waited_is_not_sent(
    mesh: Mesh,
) -> None:
    mesh.agent("w1")
    mesh.writer.hold = asyncio.Event()
    mesh.coordinator.observe(mesh.task("t1", timeoutSeconds=5, retries=0))
    mesh.coordinator.schedule()
    await until(lambda: mesh.writer.writes, "the assignment is being written")
    mesh.clock.advance(5)  # the apiserver was slow: the attempt's time is up
    mesh.writer.hold.set()
    await until(lambda: "TimedOut" in mesh.writer.phases(), "the end is written")

    assert mesh.agents.calls == []
    assert mesh.writer.stored("t1")["status"]["attempts"][0]["outcome"] == "TimedOut"


async def test_a_failed_write_is_retried_and_the_agent_waits_for_it(mesh: Mesh) -> None:
    mesh.agent("w1")
    mesh.writer.errors.append(RuntimeError("apiserver unavailable"))
    mesh.coordinator.observe(mesh.task("t1"))
    mesh.coordinator.schedule()
    await until(lambda: mesh.agents.calls, "the agent is called")
    assert [w.status["phase"] for w in mesh.writer.writes[:2]] == ["Running", "Running"]
    assert mesh.log[0] == "wrote Running w1 attempt 1"  # the retried write, then the call
    assert mesh.sent() == [("w1", 1)]
    await until(lambda: "Completed" in mesh.writer.phases(), "the result is written")


# --- conflicts --------------------------------------------------------------------------------


async def test_a_conflict_with_a_newer_unfinished_status_adopts_its_conditions_and_writes_again(
    mesh: Mesh,
) -> None:
    mesh.agent("w1")
    mesh.coordinator.observe(mesh.task("t1"))
    reviewed = {"type": "Reviewed", "status": "True", "reason": "ByHand", "message": "ok"}
    mesh.writer.someone_writes("t1", conditions=[reviewed])  # version 2; we read 1
    mesh.coordinator.schedule()
    await until(lambda: mesh.agents.calls, "the agent is called")

    first, second = mesh.writer.writes[:2]
    assert (first.resource_version, second.resource_version) == ("1", "2")
    assert (second.status["phase"], second.status["attempt"]) == ("Running", 1)
    assert reviewed in second.status["conditions"]  # adopted, ours set beside it
    assert any(
        c["type"] == "Assigned" and c["status"] == "True" for c in second.status["conditions"]
    )
    assert mesh.log[0] == "wrote Running w1 attempt 1"  # the rewrite landed before the call
    await until(lambda: "Completed" in mesh.writer.phases(), "the result is written")
    assert reviewed in mesh.writer.stored("t1")["status"]["conditions"]


async def test_a_conflict_with_a_final_status_is_never_overwritten_and_the_task_is_retired(
    mesh: Mesh,
) -> None:
    mesh.agent("w1", slots=1)
    body = mesh.task("t1")
    mesh.coordinator.observe(body)
    mesh.writer.someone_writes("t1", phase="Completed", result="theirs", attempt=1)
    mesh.coordinator.schedule()
    await until(lambda: mesh.coordinator.get("uid-t1") is None, "the task is retired")
    await settle()

    assert len(mesh.writer.writes) == 1  # the one that met the conflict; none after it
    assert mesh.writer.stored("t1")["status"]["result"] == "theirs"
    assert mesh.agents.calls == []  # the write-ahead never landed: the agent never had it
    assert mesh.coordinator.router.load(NS, "w1") == 0  # its slot is free again
    mesh.coordinator.observe(mesh.task("t2"))
    mesh.coordinator.schedule()
    await until(lambda: mesh.sent() == [("w1", 1)], "the next task gets the slot")


# --- tombstones -------------------------------------------------------------------------------


async def test_a_finished_tasks_late_running_echo_does_not_run_it_again(mesh: Mesh) -> None:
    mesh.agent("w1")
    mesh.coordinator.observe(mesh.task("t1"))
    mesh.coordinator.schedule()
    await until(lambda: mesh.coordinator.get("uid-t1") is None, "the task is done and written")
    running = mesh.writer.writes[0]
    echo_of_running = mesh.writer.stored("t1")
    echo_of_running["status"] = running.status
    echo_of_running["metadata"]["resourceVersion"] = "2"

    mesh.coordinator.observe(echo_of_running)  # delivered late by the watch
    mesh.coordinator.schedule()
    await settle()

    assert mesh.sent() == [("w1", 1)]
    assert mesh.writer.phases() == ["Running", "Completed"]
    assert mesh.coordinator.get("uid-t1") is None


# --- after a restart --------------------------------------------------------------------------


async def test_after_a_restart_a_running_task_is_sent_again_to_the_same_agent_with_the_same_attempt(
    mesh: Mesh,
) -> None:
    mesh.agent("w1")
    mesh.agent("w2")
    mesh.coordinator.observe(mesh.task("t1", status=mesh.running("w1", 2, started_ago=10)))
    await until(lambda: mesh.writer.phases() == ["Completed"], "the result is written")
    # status already named w1 and attempt 2: nothing was written before the call
    assert mesh.log == [
        "sent uid-t1 to http://w1.agents.test attempt 2",
        "wrote Completed w1 attempt 2",
    ]
    assert mesh.sent() == [("w1", 2)]
    status = mesh.writer.stored("t1")["status"]
    assert (status["attempt"], status["agentId"], len(status["attempts"])) == (2, "w1", 2)


async def restarted_with_w1_not_seen_for_most_of_the_grace(mesh: Mesh) -> None:
    """A task left running on w1, which this operator has not seen (w2 it has), one second
    before the grace ends: nothing was sent anywhere."""
    mesh.agent("w2")
    mesh.coordinator.observe(mesh.task("t1", status=mesh.running("w1", 1, started_ago=10)))
    mesh.clock.advance(GRACE.total_seconds() - 1)
    mesh.coordinator.schedule()
    await settle()
    assert mesh.agents.calls == []


async def test_after_a_restart_a_task_waits_for_its_agent_to_be_seen_again(mesh: Mesh) -> None:
    await restarted_with_w1_not_seen_for_most_of_the_grace(mesh)

    mesh.agent("w1")  # the agent watch catches up
    await until(lambda: mesh.agents.calls, "the agent is called")
    assert mesh.sent() == [("w1", 1)]


async def test_after_a_restart_a_task_whose_agent_is_not_seen_within_the_grace_fails_over(
    mesh: Mesh,
) -> None:
    await restarted_with_w1_not_seen_for_most_of_the_grace(mesh)

    mesh.clock.advance(1)
    mesh.coordinator.schedule()
    await until(lambda: mesh.agents.calls, "another agent is called")
    assert mesh.sent() == [("w2", 2)]
    status = mesh.writer.writes[0].status
    assert [(a["agentId"], a.get("outcome")) for a in status["attempts"]] == [
        ("w1", "Unreachable"),
        ("w2", None),
    ]


async def test_after_a_restart_a_task_whose_deadline_passed_times_out_without_dispatch(
    mesh: Mesh,
) -> None:
    mesh.agent("w1")
    status = mesh.running("w1", 1, started_ago=400)  # timeoutSeconds 300
    mesh.coordinator.observe(mesh.task("t1", status=status, retries=0))
    assert phase_of(mesh, "uid-t1") == "TimedOut"  # at once: no dispatch was started
    await until(lambda: mesh.writer.phases() == ["TimedOut"], "the end is written")
    await settle()

    assert mesh.agents.calls == []
    stored = mesh.writer.stored("t1")["status"]
    assert stored["attempts"][0]["outcome"] == "TimedOut"
    assert mesh.coordinator.router.load(NS, "w1") == 0


# --- gone, forgotten --------------------------------------------------------------------------


async def test_a_task_whose_meshtask_is_gone_mid_write_is_forgotten(mesh: Mesh) -> None:
    mesh.agent("w1", slots=1)
    mesh.writer.hold = asyncio.Event()
    mesh.coordinator.observe(mesh.task("t1"))
    mesh.coordinator.schedule()
    await until(lambda: mesh.writer.writes, "the assignment is being written")
    del mesh.writer.objects["t1"]  # deleted; the watch has not said so yet
    mesh.writer.hold.set()
    await until(lambda: mesh.coordinator.get("uid-t1") is None, "the task is forgotten")
    await settle()

    assert mesh.agents.calls == []
    assert len(mesh.writer.writes) == 1
    assert mesh.coordinator.router.load(NS, "w1") == 0


async def test_forgetting_a_task_mid_dispatch_cancels_the_call_and_frees_the_agent(
    mesh: Mesh,
) -> None:
    mesh.agent("w1", slots=1)
    mesh.agents.answer, release = never_answering()
    mesh.coordinator.observe(mesh.task("t1"))
    mesh.coordinator.schedule()
    await until(lambda: mesh.agents.calls, "the agent is called")

    mesh.coordinator.forget("uid-t1")  # the MeshTask was deleted
    await until(lambda: mesh.agents.calls[0].cancelled, "the call is cancelled")
    assert mesh.coordinator.get("uid-t1") is None
    assert mesh.coordinator.router.load(NS, "w1") == 0

    release.set()
    mesh.coordinator.observe(mesh.task("t2"))
    mesh.coordinator.schedule()
    await until(lambda: "Completed" in mesh.writer.phases(), "the next task runs on the slot")
    assert mesh.sent() == [("w1", 1), ("w1", 1)]
    assert {w.name for w in mesh.writer.writes} == {"t1", "t2"}
    assert [w.status["phase"] for w in mesh.writer.writes if w.name == "t1"] == ["Running"]


# --- ttlSecondsAfterFinished ----------------------------------------------------------------


async def test_a_refused_ttl_deletion_is_logged_and_tried_again_until_the_task_is_deleted(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    mesh.agent("w1")
    mesh.writer.delete_errors = [ApiException(status=500, reason="Internal Server Error")] * 2
    mesh.coordinator.observe(mesh.task("t1", ttlSecondsAfterFinished=10))
    mesh.coordinator.schedule()
    await until(lambda: "Completed" in mesh.writer.phases(), "the result is written")
    await until(lambda: mesh.coordinator.get("uid-t1") is None, "the task is settled")

    def deletion_tried(times: int) -> Callable[[], bool]:
        def tried() -> bool:
            mesh.coordinator.schedule()  # fires the TTL timers that are due
            return mesh.writer.delete_tries >= times

        return tried

    mesh.clock.advance(9)
    await settle()
    mesh.coordinator.schedule()
    await settle()
    assert mesh.writer.delete_tries == 0  # not before its TTL

    mesh.clock.advance(1)
    await until(deletion_tried(1), "the deletion is tried at the TTL")
    await settle()
    assert mesh.writer.delete_tries == 1  # the next try waits for its time
    mesh.clock.advance(1)  # more than the waits (0.01 s, then 0.02 s, in this mesh)
    await until(deletion_tried(2), "the refused deletion is tried again")
    assert "t1" in mesh.writer.objects
    mesh.clock.advance(1)
    await until(deletion_tried(3), "the deletion is tried a third time")
    await until(lambda: "t1" not in mesh.writer.objects, "the task is deleted")
    refusals = [r for r in caplog.records if "could not delete finished task" in r.message]
    assert len(refusals) == 2 and "500 Internal Server Error" in refusals[0].message


# --- sizes ------------------------------------------------------------------------------------


def failed_condition(stored: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in stored["status"]["conditions"] if c["type"] == "Failed")


async def test_a_payload_over_the_limit_fails_payload_too_large_without_calling_an_agent(
    mesh: Mesh,
) -> None:
    mesh.agent("w1")
    mesh.coordinator.observe(mesh.task("t1", payload={"blob": "x" * 262_144}))
    mesh.coordinator.schedule()
    await until(lambda: "Failed" in mesh.writer.phases(), "the failure is written")
    await settle()

    assert mesh.agents.calls == []
    stored = mesh.writer.stored("t1")
    assert failed_condition(stored)["reason"] == "PayloadTooLarge"
    assert "spec.payload is 262155 bytes of JSON; the limit is 262144" in stored["status"]["error"]
    assert mesh.coordinator.router.load(NS, "w1") == 0


async def test_a_result_over_the_limit_fails_result_too_large_and_is_not_retried(
    mesh: Mesh,
) -> None:
    mesh.agent("w1")
    mesh.agents.answer = answering(200, {"result": {"blob": "x" * 262_144}})
    mesh.coordinator.observe(mesh.task("t1", retries=3))
    mesh.coordinator.schedule()
    await until(lambda: "Failed" in mesh.writer.phases(), "the failure is written")
    await settle()

    assert len(mesh.agents.calls) == 1  # a result too large would be too large again
    stored = mesh.writer.stored("t1")
    assert failed_condition(stored)["reason"] == "ResultTooLarge"
    assert "result is 262155 bytes of JSON" in stored["status"]["error"]
    assert "result" not in stored["status"]  # never written, not even in part
    assert stored["status"]["attempts"][0]["outcome"] == "Failed"
    assert mesh.coordinator.router.load(NS, "w1") == 0
