"""MeshTask status, built: a pure function of the coordinator's TaskState (and the
conditions last written), the merge patch `kube/task_status.py` sends."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from agent_mesh.api.meshtask import MeshTaskCondition, MeshTaskReason
from agent_mesh.domain.clock import rfc3339
from agent_mesh.domain.conditions import Condition, set_condition
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


_Put = Callable[[list[Condition], str, str, str, str], list[Condition]]


def task_conditions(
    state: TaskState, current: list[Condition], now: dt.datetime
) -> list[Condition]:
    C, R = MeshTaskCondition, MeshTaskReason
    gen = state.generation

    def put(
        conds: list[Condition], type_: str, status: str, reason: str, msg: str
    ) -> list[Condition]:
        return set_condition(conds, type_, status, reason, msg, generation=gen, now=now)

    conds = current
    phase = state.phase
    if phase is TaskPhase.PENDING:
        reason, message = state.waiting or (R.QUEUED.value, "Waiting in the queue for an agent.")
        conds = put(conds, C.ASSIGNED, "False", reason, message)
        conds = put(conds, C.READY, "False", R.IN_PROGRESS, "The task has not run yet.")
        conds = _progress(put, conds, message)
    elif phase in (TaskPhase.ASSIGNED, TaskPhase.RUNNING):
        agent = f"agent {state.agent_id} (attempt {state.attempt})"
        conds = put(conds, C.ASSIGNED, "True", R.AGENT_SELECTED, f"Assigned to {agent}.")
        if phase is TaskPhase.RUNNING:
            conds = put(conds, C.RUNNING, "True", R.AGENT_ACCEPTED, f"Sent to {agent}.")
        conds = put(conds, C.READY, "False", R.IN_PROGRESS, f"Running on {agent}.")
        conds = _progress(put, conds, f"Running on {agent}.")
    elif phase is TaskPhase.COMPLETED:
        done = f"Completed by agent {state.agent_id} on attempt {state.attempt}."
        conds = put(conds, C.RUNNING, "False", R.ATTEMPT_FINISHED, done)
        conds = put(conds, C.SUCCEEDED, "True", R.RESULT_RECEIVED, done)
        conds = put(conds, C.READY, "True", R.RESULT_RECEIVED, "status.result holds the result.")
        conds = put(conds, C.RECONCILING, "False", R.RESULT_RECEIVED, done)
        conds = put(conds, C.STALLED, "False", R.RESULT_RECEIVED, done)
    else:
        reason = state.waiting[0] if state.waiting else R.RETRIES_EXHAUSTED.value
        message = state.error or "The task ended without a result."
        conds = put(conds, C.RUNNING, "False", R.ATTEMPT_FINISHED, message)
        conds = put(conds, C.FAILED, "True", reason, message)
        conds = put(conds, C.READY, "False", reason, message)
        conds = put(conds, C.RECONCILING, "False", reason, message)
        conds = put(conds, C.STALLED, "True", reason, message)
    return conds


def _progress(put: _Put, conds: list[Condition], message: str) -> list[Condition]:
    """kstatus's in-progress pair: Reconciling True, Stalled False."""
    C, R = MeshTaskCondition, MeshTaskReason
    conds = put(conds, C.RECONCILING, "True", R.IN_PROGRESS, message)
    return put(conds, C.STALLED, "False", R.IN_PROGRESS, message)


def _time(moment: dt.datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None
