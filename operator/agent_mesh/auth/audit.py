"""The audit trail: one JSON line per security-relevant event on logger `agent_mesh.audit`.

Lines go to the operator's log (ship them with the cluster's log pipeline); the most recent
ones are also kept in memory so `GET /v1/audit` can answer without a log backend.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable
from typing import Any

from agent_mesh.domain.clock import Clock, SystemClock, rfc3339

logger = logging.getLogger("agent_mesh.audit")

Record = dict[str, Any]


class AuditLog:
    """Writes audit records and remembers the last `capacity` of them."""

    def __init__(self, capacity: int = 1000, clock: Clock | None = None) -> None:
        self._recent: collections.deque[Record] = collections.deque(maxlen=capacity)
        self._clock = clock or SystemClock()
        self._listeners: list[Callable[[Record], None]] = []

    def record(self, event: str, message: str, **fields: Any) -> Record:
        """Log one event; `fields` should name the subject, object and outcome."""
        entry: Record = {"ts": rfc3339(self._clock.now()), "event": event, **fields}
        self._recent.append(entry)
        logger.info(message, extra={"fields": {k: v for k, v in entry.items() if k != "ts"}})
        for listener in self._listeners:
            listener(entry)
        return entry

    def subscribe(self, listener: Callable[[Record], None]) -> None:
        """Call `listener` with every later record (e.g. to post denials as Events)."""
        self._listeners.append(listener)

    def recent(
        self, *, event: str | None = None, namespace: str | None = None, limit: int = 100
    ) -> list[Record]:
        """Newest first, optionally filtered by event name and namespace: the records of
        that namespace's agents and those of calls into it from other namespaces."""
        matches: Iterable[Record] = reversed(self._recent)
        out: list[Record] = []
        for entry in matches:
            if event is not None and entry.get("event") != event:
                continue
            if namespace is not None and namespace not in (
                entry.get("namespace"),
                entry.get("targetNamespace"),
            ):
                continue
            out.append(entry)
            if len(out) >= limit:
                break
        return out
