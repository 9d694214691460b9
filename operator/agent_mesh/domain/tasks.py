"""A task as the coordinator tracks it: what to run, where it is in its life, and every
attempt so far. The same record serves MeshTask objects and fast-path tasks.

Status is rebuilt from this record on every write, and the record is rebuilt from status
after an operator restart (`api.meshtask.task_state`), so timers (timeouts, retries) and the
attempt history survive restarts: nothing lives only in memory except the fast path's
non-durable tasks.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from agent_mesh.domain.clock import rfc3339
from agent_mesh.domain.retry import AttemptOutcome
from agent_mesh.domain.routing import TaskDemand
from agent_mesh.domain.task_queue import Priority

ATTEMPT_HISTORY_MAX: Final = 50
"""status.attempts keeps at most this many entries; the oldest are dropped."""
DEFAULT_TIMEOUT_SECONDS: Final = 300
DEFAULT_RETRIES: Final = 3


class TaskPhase(StrEnum):
    """Where a task is in its life (DESIGN §4)."""

    PENDING = "Pending"
    ASSIGNED = "Assigned"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"


TERMINAL_PHASES: Final = frozenset({TaskPhase.COMPLETED, TaskPhase.FAILED, TaskPhase.TIMED_OUT})
IN_FLIGHT_PHASES: Final = frozenset({TaskPhase.ASSIGNED, TaskPhase.RUNNING})


@dataclass(slots=True)
class Attempt:
    agent_id: str
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    outcome: AttemptOutcome | None = None
    error: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"agentId": self.agent_id, "startedAt": rfc3339(self.started_at)}
        if self.finished_at is not None:
            out["finishedAt"] = rfc3339(self.finished_at)
        if self.outcome is not None:
            out["outcome"] = self.outcome.value
        if self.error is not None:
            out["error"] = self.error[:1024]
        return out


@dataclass(slots=True, eq=False)
class TaskState:
    """One task. `key` is the MeshTask's uid, or the fast path's task id."""

    key: str
    namespace: str
    name: str | None
    """The MeshTask's name; None for a fast-path task."""
    task_type: str
    payload: Any
    demand: TaskDemand
    priority: Priority
    timeout_seconds: int
    retries: int
    created_at: dt.datetime
    metadata: dict[str, str] = field(default_factory=dict)
    generation: int | None = None
    phase: TaskPhase = TaskPhase.PENDING
    attempt: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    agent_id: str | None = None
    assigned_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    next_retry_at: dt.datetime | None = None
    result: Any = None
    error: str | None = None
    waiting: tuple[str, str] | None = None
    """(reason, message) of why a Pending task has no agent, for its condition."""

    @property
    def durable(self) -> bool:
        return self.name is not None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name or self.key}"

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def current(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def outcomes(self) -> list[AttemptOutcome | None]:
        return [a.outcome for a in self.attempts]

    def tried(self) -> frozenset[str]:
        return frozenset(a.agent_id for a in self.attempts)

    def deadline(self) -> dt.datetime | None:
        """When the running attempt times out (from its start in status)."""
        current = self.current
        if current is None or current.finished_at is not None:
            return None
        return current.started_at + dt.timedelta(seconds=self.timeout_seconds)

    # --- transitions (the coordinator calls these; they only change this record) ---------

    def assign(self, agent_id: str, now: dt.datetime) -> None:
        self.phase = TaskPhase.ASSIGNED
        self.attempt += 1
        self.agent_id = agent_id
        self.assigned_at = now
        self.started_at = None
        self.next_retry_at = None
        self.waiting = None
        self.attempts.append(Attempt(agent_id, now))
        del self.attempts[:-ATTEMPT_HISTORY_MAX]

    def run(self, now: dt.datetime) -> None:
        self.phase = TaskPhase.RUNNING
        self.started_at = now

    def complete(self, result: Any, now: dt.datetime) -> None:
        self._finish_attempt(AttemptOutcome.SUCCEEDED, None, now)
        self.phase = TaskPhase.COMPLETED
        self.result = result
        self.error = None
        self.completed_at = now

    def attempt_ended(self, outcome: AttemptOutcome, error: str, now: dt.datetime) -> None:
        """The current attempt ended without a result; the caller decides what is next."""
        self._finish_attempt(outcome, error, now)
        self.error = error

    def retry_at(self, at: dt.datetime, reason: tuple[str, str]) -> None:
        self.phase = TaskPhase.PENDING
        self.next_retry_at = at
        self.waiting = reason

    def give_up(self, phase: TaskPhase, error: str, now: dt.datetime) -> None:
        self.phase = phase
        self.error = error
        self.completed_at = now
        self.next_retry_at = None

    def _finish_attempt(self, outcome: AttemptOutcome, error: str | None, now: dt.datetime) -> None:
        current = self.current
        if current is not None and current.finished_at is None:
            current.finished_at = now
            current.outcome = outcome
            current.error = error
