"""What the coordinator keeps per task: the task's own record (`Tracked`) and, apart from
it, the bookkeeping of its status writes (`WriteState`), which only the status sync reads
and which only durable tasks (MeshTasks) have."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from agent_mesh.domain.conditions import Condition
from agent_mesh.domain.tasks import TaskState

Shape = tuple[Any, ...]
"""What routing depends on: tasks of one shape are placed in order, or wait together."""


@dataclass(slots=True, eq=False)
class WriteState:
    """Where a MeshTask's status stands in the apiserver, as far as the coordinator knows."""

    resource_version: str | None = None
    conditions: list[Condition] = field(default_factory=list)
    persisted_attempt: int = 0
    """The attempt number status held at the last successful write (or read)."""
    dirty: bool = False
    """Status changed since the last write."""
    writing: bool = False
    """A flush runs for this task: one writer at a time."""
    urgent: bool = False
    """The next write does not wait for the coalescing window (a dispatch waits on it)."""
    written: asyncio.Event | None = None
    """Set by each write; made only when a dispatch waits for one."""
    hurry: asyncio.Event | None = None
    """Cuts the coalescing wait short; exists only while a write waits."""


@dataclass(slots=True, eq=False)
class Tracked:
    """A task in the coordinator: its state, its place in line, its dispatch in flight."""

    state: TaskState
    seq: int
    """Arrival order: within a priority, the oldest task is placed first."""
    writes: WriteState | None = None
    """None for an in-memory (fast-path) task: it has no status to write."""
    dispatch: asyncio.Task[None] | None = None
    done: asyncio.Future[TaskState] | None = None
    """Resolved with the state when the task ends; made only when someone waits."""
    reported_waiting: tuple[str, str] | None = None
    """The waiting reason last put in status, so that repeating it writes nothing."""

    shape: Shape = field(init=False, repr=False)
    """What routing depends on, from the task's demand (fixed at creation): computed once,
    since the scheduler looks it up several times per task."""

    def __post_init__(self) -> None:
        d = self.state.demand
        self.shape = (
            d.namespace,
            d.required_capabilities,
            d.agent_type,
            tuple(sorted(d.labels.items())),
            d.agent_ref,
            d.strategy,
        )

    @property
    def key(self) -> str:
        return self.state.key

    def stop_dispatch(self) -> None:
        """Cancel the dispatch in flight, if any: its answer no longer counts."""
        if self.dispatch is not None:
            self.dispatch.cancel()
            self.dispatch = None
