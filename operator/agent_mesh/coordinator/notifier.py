"""The one place a task's steps are announced: the audit log (task.assigned,
task.completed), Kubernetes Events on the MeshTask, and the task metrics."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from typing import Protocol

from agent_mesh.api.meshtask import MeshTaskReason
from agent_mesh.auth.audit import AuditLog
from agent_mesh.coordinator.tracked import Tracked
from agent_mesh.domain.tasks import TaskPhase, TaskState
from agent_mesh.kube.events import ObjectRef
from agent_mesh.observability.metrics import (
    ROUTING_DURATION,
    TASK_DURATION,
    TASKS,
    TASKS_COMPLETED,
    TASKS_FAILED,
)

GAUGE_SECONDS = 1.0
"""agentmesh_tasks{phase} walks every task: recounted at most this often."""


class EventSink(Protocol):
    """Posts Kubernetes Events (agent_mesh.kube.events.EventPoster in the operator)."""

    def post(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None: ...


class Notifier:
    """Audit lines, Events (MeshTasks only: in-memory tasks have no object) and metrics."""

    def __init__(self, audit: AuditLog, events: EventSink | None) -> None:
        self.audit = audit
        self.events = events
        self._gauged = 0.0

    def routed(self, seconds: float) -> None:
        ROUTING_DURATION.observe(seconds)

    def assigned(self, state: TaskState, strategy: str) -> None:
        agent, attempt = state.agent_id, state.attempt
        self._audit(
            "task.assigned", state, f"attempt {attempt} assigned to agent {agent}", strategy
        )
        self._event(
            state,
            "Normal",
            "TaskAssigned",
            f"Attempt {attempt} sent to agent {agent} ({strategy}).",
        )

    def waiting(self, state: TaskState, reason: str, message: str) -> None:
        """The head of a line of tasks that wait, each time the reason changes."""
        self._event(state, "Normal", reason, message)

    def retrying(self, state: TaskState, error: str, plan: str) -> None:
        self._event(state, "Warning", "TaskRetrying", f"{error}. {plan}.")

    def completed(self, state: TaskState, now: dt.datetime) -> None:
        TASKS_COMPLETED.inc()
        TASK_DURATION.observe(max(0.0, (now - state.created_at).total_seconds()))
        self._audit("task.completed", state, f"completed by agent {state.agent_id}")
        self._event(
            state,
            "Normal",
            "TaskCompleted",
            f"Completed by agent {state.agent_id} on attempt {state.attempt}.",
        )

    def gave_up(
        self, state: TaskState, phase: TaskPhase, error: str, reason: MeshTaskReason
    ) -> None:
        TASKS_FAILED.labels(reason=reason.value).inc()
        self._audit("task.completed", state, f"ended {phase.value}: {error}")
        self._event(state, "Warning", f"Task{phase.value}", error)

    def gauge(self, tasks: Iterable[Tracked]) -> None:
        """agentmesh_tasks{phase}, recounted at most once every GAUGE_SECONDS."""
        if time.monotonic() - self._gauged < GAUGE_SECONDS:
            return
        self._gauged = time.monotonic()
        counts = dict.fromkeys(TaskPhase, 0)
        for tracked in tasks:
            counts[tracked.state.phase] += 1
        for phase, count in counts.items():
            TASKS.labels(phase=phase.value).set(count)

    def _audit(self, event: str, state: TaskState, what: str, strategy: str | None = None) -> None:
        """An audit line about `state`: task.assigned (with the strategy), or
        task.completed (with the outcome: its phase)."""
        context = {"strategy": strategy} if strategy is not None else {"outcome": state.phase.value}
        self.audit.record(
            event,
            f"task {state.ref} {what}",
            namespace=state.namespace,
            task=state.name or state.key,
            agentId=state.agent_id,
            attempt=state.attempt,
            **context,
        )

    def _event(self, state: TaskState, type_: str, reason: str, message: str) -> None:
        if self.events is not None and state.name is not None:
            ref = ObjectRef("MeshTask", state.namespace, state.name, state.key)
            self.events.post(ref, type_, reason, message)
