"""spec.ttlSecondsAfterFinished: a finished MeshTask is deleted that long after it ended
(status.completedAt), by this operator or, after a restart, by the next one.

A deletion the apiserver refuses (anything but "not found") is logged and tried again,
the wait doubling from `retry_seconds` up to MAX_RETRY_SECONDS, until it succeeds.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Final

from agent_mesh.coordinator.status_sync import TaskWriter
from agent_mesh.coordinator.timers import TimerKind, Timers
from agent_mesh.domain.background import Background
from agent_mesh.domain.clock import Clock
from agent_mesh.domain.tasks import TaskState

logger = logging.getLogger("agent_mesh.coordinator")
MAX_RETRY_SECONDS: Final = 300.0


class Expiry:
    """TTLs of tracked tasks, and deletions armed as TTL timers."""

    def __init__(
        self,
        *,
        timers: Timers,
        writer: TaskWriter | None,
        background: Background,
        clock: Clock,
        retry_seconds: float,
    ) -> None:
        self._timers = timers
        self._writer = writer
        self._background = background
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._ttl_seconds: dict[str, int] = {}
        self._expiring: dict[str, TaskState] = {}
        self._failures: dict[str, int] = {}

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
        try:
            await writer.delete(state)
        except Exception as error:  # refused or unreachable: try again later, never drop it
            failures = self._failures.get(state.key, 0) + 1
            self._failures[state.key] = failures
            wait = min(self._retry_seconds * 2 ** (failures - 1), MAX_RETRY_SECONDS)
            logger.warning(
                "could not delete finished task %s (ttlSecondsAfterFinished): %s; "
                "trying again in %g s",
                state.ref,
                _describe(error),
                wait,
            )
            self._expiring[state.key] = state
            self._timers.at(
                self._clock.now() + dt.timedelta(seconds=wait), TimerKind.TTL, state.key
            )
            return
        self._failures.pop(state.key, None)
        logger.info("deleted finished task %s (ttlSecondsAfterFinished)", state.ref)


def _describe(error: Exception) -> str:
    """One line for an apiserver refusal (status and reason), else the error itself."""
    status, reason = getattr(error, "status", None), getattr(error, "reason", None)
    if status is not None:
        return f"{status} {reason or ''}".strip()
    return f"{type(error).__name__}: {error}"
