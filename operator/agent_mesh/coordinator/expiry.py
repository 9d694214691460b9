"""spec.ttlSecondsAfterFinished: a finished MeshTask is deleted that long after it ended
(status.completedAt), by this operator or, after a restart, by the next one."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from agent_mesh.coordinator.background import Background
from agent_mesh.coordinator.status_sync import TaskWriter
from agent_mesh.coordinator.timers import TimerKind, Timers
from agent_mesh.domain.tasks import TaskState

logger = logging.getLogger("agent_mesh.coordinator")


class Expiry:
    """TTLs of tracked tasks, and deletions armed as TTL timers."""

    def __init__(
        self, *, timers: Timers, writer: TaskWriter | None, background: Background
    ) -> None:
        self._timers = timers
        self._writer = writer
        self._background = background
        self._ttl_seconds: dict[str, int] = {}
        self._expiring: dict[str, TaskState] = {}

    def remember(self, key: str, ttl_seconds: Any) -> None:
        """A tracked task's spec.ttlSecondsAfterFinished (None: kept for ever)."""
        if ttl_seconds is not None:
            self._ttl_seconds[key] = int(ttl_seconds)

    def forget(self, key: str) -> None:
        self._ttl_seconds.pop(key, None)

    def finished_seen(self, state: TaskState, ttl_seconds: Any) -> None:
        """A MeshTask read already finished (after a restart): arm its deletion."""
        if ttl_seconds is not None:
            self._later(state, int(ttl_seconds))

    def after_finish(self, state: TaskState) -> None:
        """The final status of a tracked task is stored: arm its deletion, if it has a TTL."""
        ttl = self._ttl_seconds.pop(state.key, None)
        if ttl is not None:
            self._later(state, ttl)

    def expire(self, key: str) -> None:
        """The TTL timer handler: delete the task."""
        state = self._expiring.pop(key, None)
        if state is not None and self._writer is not None:
            self._background.spawn(self._delete(state, self._writer))

    def _later(self, state: TaskState, ttl_seconds: int) -> None:
        if state.completed_at is None or state.name is None:
            return
        self._expiring[state.key] = state
        when = state.completed_at + dt.timedelta(seconds=ttl_seconds)
        self._timers.at(when, TimerKind.TTL, state.key)

    async def _delete(self, state: TaskState, writer: TaskWriter) -> None:
        await writer.delete(state)
        logger.info("deleted finished task %s (ttlSecondsAfterFinished)", state.ref)
