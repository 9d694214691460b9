"""MeshTask status, built: a pure function of the coordinator's TaskState (and the
conditions last written), the merge patch `kube/task_status.py` sends."""

from __future__ import annotations

import datetime as dt
from typing import Any

from agent_mesh.api.meshtask import MeshTaskCondition, MeshTaskReason
from agent_mesh.domain.clock import rfc3339
from agent_mesh.domain.conditions import Condition, ConditionSet
from agent_mesh.domain.tasks import TaskPhase, TaskState


def task_status(state: TaskState, conditions: list[Condition], now: dt.datetime) -> dict[str, Any]:
    """The whole status of `state` (a merge patch that sets every field it owns)."""
    status: dict[str, Any] = {
        "phase": state.phase.value,
        "attempt": state.attempt,
        "attempts": [a.to_wire() for a in state.attempts],
        "agentId": state.agent_id,
        "assignedAt": _time(state.assigned_at),
        "startedAt": _time(state.started_at),
        "completedAt": _time(state.completed_at),
        "nextRetryAt": _time(state.next_retry_at),
        "result": state.result if state.phase is TaskPhase.COMPLETED else None,
        "error": state.error[:1024] if state.error else None,
        "conditions": task_conditions(state, conditions, now),
    }
    if state.generation is not None:
        status["observedGeneration"] = state.generation
    return status


def task_conditions(
    state: TaskState, current: list[Condition], now: dt.datetime
) -> list[Condition]:
    C, R = MeshTaskCondition, MeshTaskReason
    conditions = ConditionSet(current, generation=state.generation, now=now)
    put = conditions.set
    phase = state.phase
    if phase is TaskPhase.PENDING:
        reason, message = state.waiting or (R.QUEUED.value, "Waiting in the queue for an agent.")
        put(C.ASSIGNED, "False", reason, message)
        put(C.READY, "False", R.IN_PROGRESS, "The task has not run yet.")
    elif phase in (TaskPhase.ASSIGNED, TaskPhase.RUNNING):
        agent = f"agent {state.agent_id} (attempt {state.attempt})"
        put(C.ASSIGNED, "True", R.AGENT_SELECTED, f"Assigned to {agent}.")
        if phase is TaskPhase.RUNNING:
            put(C.RUNNING, "True", R.AGENT_ACCEPTED, f"Sent to {agent}.")
        put(C.READY, "False", R.IN_PROGRESS, f"Running on {agent}.")
    elif phase is TaskPhase.COMPLETED:
        done = f"Completed by agent {state.agent_id} on attempt {state.attempt}."
        put(C.RUNNING, "False", R.ATTEMPT_FINISHED, done)
        put(C.SUCCEEDED, "True", R.RESULT_RECEIVED, done)
        put(C.READY, "True", R.RESULT_RECEIVED, "status.result holds the result.")
    else:
        reason = state.waiting[0] if state.waiting else R.RETRIES_EXHAUSTED.value
        message = state.error or "The task ended without a result."
        put(C.RUNNING, "False", R.ATTEMPT_FINISHED, message)
        put(C.FAILED, "True", reason, message)
        put(C.READY, "False", reason, message)
    return conditions.items


def _time(moment: dt.datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None
