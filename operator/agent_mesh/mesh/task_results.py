"""Where finished in-memory tasks' answers wait for the submitter to fetch them.

The coordinator forgets an in-memory task the moment it ends (it has nothing to write), so
an asynchronous submitter would have nothing to read. This store keeps each finished
answer, already encoded as JSON, for `ttl_seconds`, and never more than `max_entries`
answers or `max_bytes` of them: the oldest go first. Memory is therefore bounded whatever
the submitters do, and a submitter that does not come back in time gets 404, which the
docs state.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

DEFAULT_MAX_ENTRIES: Final = 10_000
DEFAULT_TTL_SECONDS: Final = 600.0
DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Kept:
    namespace: str
    answer: bytes
    expires: float


class ResultStore:
    """Finished answers by task id; see the module docstring."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self._clock = clock
        self._kept: OrderedDict[str, Kept] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def put(self, key: str, namespace: str, answer: bytes) -> None:
        old = self._kept.pop(key, None)
        if old is not None:
            self._bytes -= len(old.answer)
        self._kept[key] = Kept(namespace, answer, self._clock() + self.ttl_seconds)
        self._bytes += len(answer)
        self._trim()

    def get(self, key: str) -> Kept | None:
        kept = self._kept.get(key)
        if kept is None:
            return None
        if kept.expires <= self._clock():
            self._drop(key)
            return None
        return kept

    def _trim(self) -> None:
        """Oldest first: past the TTL, then past the count or byte bounds. Insertion order
        is expiry order (one TTL for all), so this only ever looks at the front."""
        now = self._clock()
        kept = self._kept
        while kept:
            key, first = next(iter(kept.items()))
            if (
                first.expires > now
                and len(kept) <= self.max_entries
                and self._bytes <= self.max_bytes
            ):
                return
            self._drop(key)

    def _drop(self, key: str) -> None:
        kept = self._kept.pop(key, None)
        if kept is not None:
            self._bytes -= len(kept.answer)
