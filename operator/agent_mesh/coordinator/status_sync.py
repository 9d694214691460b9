"""Status sync: each MeshTask's status written by one writer at a time, coalescing.

A change waits up to the coalescing window for the next one, so a burst of changes costs
one write; an urgent change (an assignment a dispatch waits for) is written at once.
Dispatch is write-ahead: status names the agent and attempt before the agent gets the
task (`persisted`), so after a crash the task goes back to the same agent, which answers
a redelivered (uid, attempt) without running it again.

Every write carries the resourceVersion last written or read. On a conflict the stored
object wins what it owns: a final phase there is never overwritten (the task is retired),
otherwise its conditions are adopted and the write is made again on its version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final, Protocol

from agent_mesh.coordinator.background import Background
from agent_mesh.coordinator.book import TaskBook
from agent_mesh.coordinator.tracked import Tracked, WriteState
from agent_mesh.domain.clock import Clock
from agent_mesh.domain.tasks import TERMINAL_PHASES, TaskState
from agent_mesh.kube.task_status import WriteResult, task_status

logger = logging.getLogger("agent_mesh.coordinator")
COALESCE_SECONDS: Final = 0.05
"""How long a status change waits for the next one before it is written."""
WRITE_RETRY_SECONDS: Final = 1.0
"""How long after a failed write (not a conflict) it is tried again."""
_FINAL_VALUES: Final = frozenset(p.value for p in TERMINAL_PHASES)


class TaskWriter(Protocol):
    """MeshTask status I/O (agent_mesh.kube.task_status.TaskStatusWriter in the operator)."""

    async def write(
        self, state: TaskState, status: dict[str, Any], resource_version: str | None
    ) -> tuple[WriteResult, dict[str, Any] | None]: ...

    async def delete(self, state: TaskState) -> None: ...


class StatusSync:
    """Writes durable tasks' status; tells `gone` when a MeshTask no longer exists and
    `settled` when a task's final status is stored (its own, or another writer's)."""

    def __init__(
        self,
        *,
        book: TaskBook,
        writer: TaskWriter | None,
        clock: Clock,
        background: Background,
        gone: Callable[[str], None],
        settled: Callable[[Tracked], None],
        coalesce_seconds: float = COALESCE_SECONDS,
        retry_seconds: float = WRITE_RETRY_SECONDS,
    ) -> None:
        self._book = book
        self._writer = writer
        self._clock = clock
        self._background = background
        self._gone = gone
        self._settled = settled
        self._coalesce_seconds = coalesce_seconds
        self._retry_seconds = retry_seconds

    def dirty(self, tracked: Tracked, *, urgent: bool = False) -> None:
        """The task's status changed: write it (after the coalescing window unless urgent)."""
        writes = tracked.writes
        if writes is None or self._writer is None:
            return
        writes.dirty = True
        if urgent:
            writes.urgent = True
            if writes.hurry is not None:
                writes.hurry.set()
        if not writes.writing:
            writes.writing = True
            self._background.spawn(self._flush(tracked, writes, self._writer))

    def finished(self, tracked: Tracked) -> None:
        """The task ended: its final status is written, or, with none to write (in
        memory), the book lets it go at once (the fast path keeps only waiters)."""
        if tracked.writes is None or self._writer is None:
            self._book.drop(tracked.key)
        else:
            self.dirty(tracked)

    async def persisted(self, tracked: Tracked, attempt: int) -> None:
        """Return once status names `attempt` (at once for a task with none to write)."""
        writes = tracked.writes
        if writes is None or self._writer is None:
            return
        while writes.persisted_attempt < attempt:
            if writes.written is None:
                writes.written = asyncio.Event()
            writes.written.clear()
            await writes.written.wait()

    async def _flush(self, tracked: Tracked, writes: WriteState, writer: TaskWriter) -> None:
        state = tracked.state
        try:
            if not writes.urgent:
                writes.hurry = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(writes.hurry.wait(), self._coalesce_seconds)
                writes.hurry = None
            while writes.dirty:
                writes.dirty = False
                writes.urgent = False
                finished = state.finished
                attempt = state.attempt
                status = task_status(state, writes.conditions, self._clock.now())
                try:
                    result, body = await writer.write(state, status, writes.resource_version)
                except Exception:
                    logger.exception("writing the status of task %s failed; retrying", state.ref)
                    writes.dirty = True
                    await asyncio.sleep(self._retry_seconds)
                    continue
                if result is WriteResult.GONE:
                    self._gone(state.key)
                    return
                assert body is not None
                writes.resource_version = (body.get("metadata") or {}).get("resourceVersion")
                stored = body.get("status") or {}
                if result is WriteResult.CONFLICT:
                    if stored.get("phase") in _FINAL_VALUES:  # a final phase is written once
                        if not finished:
                            logger.info("task %s was finished by another writer", state.ref)
                        self._settled(tracked)
                        return
                    writes.conditions = list(stored.get("conditions") or ())
                    writes.dirty = True  # again, on the version just read
                    continue
                writes.conditions = status["conditions"]
                writes.persisted_attempt = attempt
                if writes.written is not None:
                    writes.written.set()
                if finished and not writes.dirty:
                    self._settled(tracked)
        finally:
            writes.writing = False
