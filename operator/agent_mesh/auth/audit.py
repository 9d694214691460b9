"""The audit trail: one JSON line per security-relevant event on logger `agent_mesh.audit`.

Lines go to the operator's log (ship them with the cluster's log pipeline); the most recent
ones are also kept in memory so `GET /v1/audit` can answer without a log backend.

Refusals of callers without a verified identity (a token rejected, an exchange refused, a
request over a rate limit) are kept in a ring of their own: anyone can cause them, so a
flood of them must not push the other records (issuance, decisions, revocations) out.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any, Final

from agent_mesh.domain.clock import Clock, SystemClock, rfc3339

logger = logging.getLogger("agent_mesh.audit")

Record = dict[str, Any]
REFUSAL_EVENTS: Final = frozenset({"token.rejected", "token.refused", "request.throttled"})
"""Events an unauthenticated caller can cause at will: kept apart from the others."""


class AuditLog:
    """Writes audit records and remembers the last `capacity` of them, plus the last
    `refusal_capacity` refusals (REFUSAL_EVENTS) in a ring of their own."""

    def __init__(
        self, capacity: int = 1000, clock: Clock | None = None, refusal_capacity: int = 1000
    ) -> None:
        self._recent: collections.deque[tuple[int, Record]] = collections.deque(maxlen=capacity)
        self._refusals: collections.deque[tuple[int, Record]] = collections.deque(
            maxlen=refusal_capacity
        )
        self._sequence = itertools.count()
        self._clock = clock or SystemClock()
        self._listeners: list[Callable[[Record], None]] = []

    def record(self, event: str, message: str, **fields: Any) -> Record:
        """Log one event; `fields` should name the subject, object and outcome."""
        entry: Record = {"ts": rfc3339(self._clock.now()), "event": event, **fields}
        ring = self._refusals if event in REFUSAL_EVENTS else self._recent
        ring.append((next(self._sequence), entry))
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
        """Newest first (both rings, interleaved), optionally filtered by event name and
        namespace: the records of that namespace's agents and those of calls into it from
        other namespaces."""
        newest_first: Iterator[tuple[int, Record]] = heapq.merge(
            reversed(self._recent), reversed(self._refusals), key=lambda item: -item[0]
        )
        out: list[Record] = []
        for _, entry in newest_first:
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
