"""MeshTask status: built from the coordinator's TaskState, written as merge patches.

Every write carries the resourceVersion of the coordinator's last write (or read), so a
write never lands on a version it has not seen. A final phase is written once: on a
conflict the object is read again, and if another writer already finished it, the
coordinator adopts that ending instead of writing its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from enum import StrEnum
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import GROUP, VERSION
from agent_mesh.api.meshtask import MeshTaskCondition, MeshTaskReason
from agent_mesh.domain.clock import rfc3339
from agent_mesh.domain.conditions import Condition, set_condition
from agent_mesh.domain.tasks import TaskPhase, TaskState

logger = logging.getLogger("agent_mesh.tasks")
CONCURRENCY: Final = 32
PLURAL: Final = "meshtasks"


class WriteResult(StrEnum):
    """What became of one status write."""

    WRITTEN = "written"
    """The patch landed; the answer is the patched object."""
    GONE = "gone"
    """The MeshTask no longer exists."""
    CONFLICT = "conflict"
    """Someone wrote since the resourceVersion sent; the answer is the object as it is now."""


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
    elif phase in (TaskPhase.ASSIGNED, TaskPhase.RUNNING):
        agent = f"agent {state.agent_id} (attempt {state.attempt})"
        conds = put(conds, C.ASSIGNED, "True", R.AGENT_SELECTED, f"Assigned to {agent}.")
        if phase is TaskPhase.RUNNING:
            conds = put(conds, C.RUNNING, "True", R.AGENT_ACCEPTED, f"Sent to {agent}.")
        conds = put(conds, C.READY, "False", R.IN_PROGRESS, f"Running on {agent}.")
    elif phase is TaskPhase.COMPLETED:
        done = f"Completed by agent {state.agent_id} on attempt {state.attempt}."
        conds = put(conds, C.RUNNING, "False", R.ATTEMPT_FINISHED, done)
        conds = put(conds, C.SUCCEEDED, "True", R.RESULT_RECEIVED, done)
        conds = put(conds, C.READY, "True", R.RESULT_RECEIVED, "status.result holds the result.")
    else:
        reason = state.waiting[0] if state.waiting else R.RETRIES_EXHAUSTED.value
        message = state.error or "The task ended without a result."
        conds = put(conds, C.RUNNING, "False", R.ATTEMPT_FINISHED, message)
        conds = put(conds, C.FAILED, "True", reason, message)
        conds = put(conds, C.READY, "False", reason, message)
    return conds


def _time(moment: dt.datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


class TaskStatusWriter:
    """Writes MeshTask status (bounded concurrency) and deletes finished tasks (TTL)."""

    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self.writes = 0

    async def write(
        self, state: TaskState, status: dict[str, Any], resource_version: str | None
    ) -> tuple[WriteResult, dict[str, Any] | None]:
        """(WRITTEN, the patched object), (GONE, None) when the task was deleted, or
        (CONFLICT, the current object) when someone wrote since `resource_version`."""
        assert state.name is not None
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        async with self._limit:
            try:
                answer = await self._custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
                    GROUP,
                    VERSION,
                    state.namespace,
                    PLURAL,
                    state.name,
                    body,
                    _content_type="application/merge-patch+json",
                )
            except ApiException as error:
                if error.status == 404:
                    return WriteResult.GONE, None
                if error.status != 409:
                    raise
                try:
                    current = await self._custom.get_namespaced_custom_object(
                        GROUP, VERSION, state.namespace, PLURAL, state.name
                    )
                except ApiException as again:
                    if again.status == 404:
                        return WriteResult.GONE, None
                    raise
                return WriteResult.CONFLICT, dict(current)
        self.writes += 1
        return WriteResult.WRITTEN, dict(answer)

    async def delete(self, state: TaskState) -> None:
        assert state.name is not None
        async with self._limit:
            try:
                await self._custom.delete_namespaced_custom_object(
                    GROUP, VERSION, state.namespace, PLURAL, state.name
                )
            except ApiException as error:
                if error.status != 404:
                    raise
