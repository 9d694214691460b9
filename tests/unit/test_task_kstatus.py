"""MeshTask status as GitOps tools read it: kstatus (Flux, `kubectl wait`, Argo CD's
fallback) sees progress while the task runs and a final state when it ends."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from agent_mesh.api.meshtask import MESHTASK, task_state
from agent_mesh.api.meshtask_status import task_status
from agent_mesh.domain.tasks import TaskPhase

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def kstatus(obj: dict[str, Any]) -> str:
    """kstatus's generic rules for a custom resource (sigs.k8s.io/cli-utils
    pkg/kstatus/status, checkGenericProperties): a stale observedGeneration is
    InProgress, then Reconciling=True is InProgress, Stalled=True is Failed, else Current."""
    status = obj.get("status") or {}
    observed = status.get("observedGeneration")
    if observed is not None and observed != obj["metadata"]["generation"]:
        return "InProgress"
    for cond in status.get("conditions") or []:
        if cond["type"] == "Reconciling" and cond["status"] == "True":
            return "InProgress"
        if cond["type"] == "Stalled" and cond["status"] == "True":
            return "Failed"
    return "Current"


def _task(phase: TaskPhase, **fields: Any) -> dict[str, Any]:
    body = {
        "metadata": {"name": "t1", "namespace": "ns", "uid": "u1", "generation": 1},
        "spec": {"taskType": "summarize"},
    }
    state = task_state(body)
    state.phase = phase
    for key, value in fields.items():
        setattr(state, key, value)
    body["status"] = task_status(state, [], NOW)
    return body


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (TaskPhase.PENDING, "InProgress"),
        (TaskPhase.ASSIGNED, "InProgress"),
        (TaskPhase.RUNNING, "InProgress"),
        (TaskPhase.COMPLETED, "Current"),
        (TaskPhase.FAILED, "Failed"),
        (TaskPhase.TIMED_OUT, "Failed"),
    ],
)
def test_kstatus_sees_progress_then_a_final_state(phase: TaskPhase, expected: str) -> None:
    task = _task(phase, agent_id="w1", attempt=1, error="boom")
    assert kstatus(task) == expected
    assert task["status"]["observedGeneration"] == 1


def test_a_stalled_task_says_why_in_the_condition() -> None:
    task = _task(TaskPhase.FAILED, error="agent w1: model overloaded", attempt=4)
    stalled = next(c for c in task["status"]["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert stalled["reason"] == "RetriesExhausted"
    assert "model overloaded" in stalled["message"]
    assert stalled["observedGeneration"] == 1


def test_a_task_that_left_pending_turns_reconciling_off_only_at_its_end() -> None:
    body = _task(TaskPhase.PENDING)
    state = task_state(body)
    state.phase, state.agent_id, state.attempt = TaskPhase.RUNNING, "w1", 1
    running = task_status(state, body["status"]["conditions"], NOW)["conditions"]
    assert {c["type"]: c["status"] for c in running}["Reconciling"] == "True"
    state.phase, state.result = TaskPhase.COMPLETED, {"ok": True}
    done = task_status(state, running, NOW)["conditions"]
    kinds = {c["type"]: c["status"] for c in done}
    assert (kinds["Reconciling"], kinds["Stalled"], kinds["Ready"]) == ("False", "False", "True")


def test_the_meshtask_crd_refuses_a_spec_change_with_a_message() -> None:
    rule = MESHTASK.root_rules[0].as_schema()
    assert rule["rule"] == "self.spec == oldSelf.spec"
    assert rule["fieldPath"] == ".spec"
    assert "spec is immutable" in rule["message"]
    assert "create a new MeshTask" in rule["message"]


def test_kstatus_sees_a_meshagent_in_progress_until_the_operator_registers_its_spec() -> None:
    """MeshAgent: observedGeneration follows each spec change the operator registered; no
    Reconciling/Stalled (its health is not the manifest's state: docs/gitops.md)."""
    from agent_mesh.api.meshagent_status import registration_patch

    agent: dict[str, Any] = {"metadata": {"generation": 1}, "status": {}}
    agent["status"] = registration_patch({}, 1, NOW)
    assert kstatus(agent) == "Current"
    agent["metadata"]["generation"] = 2  # a spec change not yet seen
    assert kstatus(agent) == "InProgress"
    agent["status"] |= registration_patch(agent["status"], 2, NOW)
    assert agent["status"]["observedGeneration"] == 2
    assert kstatus(agent) == "Current"
    types = {c["type"] for c in agent["status"]["conditions"]}
    assert "Stalled" not in types and "Reconciling" not in types
