"""The coordinator's timers: one heap of (when, kind, task), fired by the scheduler loop.

Every time comes from status timestamps (a retry's nextRetryAt, an attempt's start plus
its timeout, completedAt plus the TTL), so an operator restart neither resets nor loses a
timer: the new operator arms the same ones from the same status.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from collections.abc import Callable, Mapping
from enum import StrEnum


class TimerKind(StrEnum):
    """What a timer does when it fires, for the task it names."""

    DUE = "due"
    """A retry's backoff ended: the task joins the queue again."""
    TIMEOUT = "timeout"
    """An attempt the agent accepted (202) ran out of time without a report."""
    RECONCILE = "reconcile"
    """A restarted task's agent was not seen within the grace: fail it over."""
    TTL = "ttl"
    """A finished MeshTask's ttlSecondsAfterFinished passed: delete it."""


Handler = Callable[[str], None]


class Timers:
    """Timers by time; `fire_due` runs the handler of each kind for every task due."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._heap: list[tuple[dt.datetime, int, TimerKind, str]] = []
        self._seq = itertools.count()
        self._wake = wake
        self._handlers: dict[TimerKind, Handler] = {}

    def handle(self, handlers: Mapping[TimerKind, Handler]) -> None:
        """Who acts on each kind; every kind needs one."""
        missing = set(TimerKind) - set(handlers)
        if missing:
            names = ", ".join(sorted(kind.value for kind in missing))
            raise ValueError(f"every timer kind needs a handler; none for: {names}")
        self._handlers = dict(handlers)

    def at(self, when: dt.datetime, kind: TimerKind, key: str) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), kind, key))
        self._wake()  # the scheduler loop may sleep past `when`

    def fire_due(self, now: dt.datetime) -> None:
        """Fire every timer due at `now`, those that firing arms included."""
        while self._heap and self._heap[0][0] <= now:
            _, _, kind, key = heapq.heappop(self._heap)
            self._handlers[kind](key)

    def seconds_until_next(self, now: dt.datetime) -> float | None:
        """How long the loop may sleep; None when no timer is armed."""
        if not self._heap:
            return None
        return max(0.0, (self._heap[0][0] - now).total_seconds())

    def __len__(self) -> int:
        return len(self._heap)
