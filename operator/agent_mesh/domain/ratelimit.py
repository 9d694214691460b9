"""Token buckets by key (a source address, an agent): the mesh API's abuse limits.

Pure: the time comes from an injected monotonic clock, so limits are testable without
sleeping. Memory is bounded: at most `max_keys` buckets are kept, and the bucket used
least recently is forgotten first. That one has had the longest time to refill, so
forgetting it (it starts full again when its key returns) gives back little; a flood of
new keys cannot grow the table.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final

MonotonicClock = Callable[[], float]
DEFAULT_MAX_KEYS: Final = 10_000


@dataclass(frozen=True, slots=True)
class Rate:
    """`burst` requests at once, refilled at `per_second`; a burst of 0 is no limit."""

    burst: float
    per_second: float

    @property
    def unlimited(self) -> bool:
        return self.burst <= 0


class TokenBuckets:
    """One token bucket per key, all with the same rate."""

    def __init__(
        self,
        rate: Rate,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: MonotonicClock = time.monotonic,
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        if not rate.unlimited and rate.per_second <= 0:
            raise ValueError("a limited rate needs a positive per_second")
        self.rate = rate
        self.max_keys = max_keys
        self._clock = clock
        # key → (tokens, when last updated); insertion order is least recently used first
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def take(self, key: Hashable, cost: float = 1.0) -> float:
        """Take `cost` from `key`'s bucket: 0.0 when allowed, else the seconds until it
        would be (nothing is taken then)."""
        if self.rate.unlimited:
            return 0.0
        now = self._clock()
        tokens = self._level(key, now)
        if tokens >= cost:
            self._store(key, tokens - cost, now)
            return 0.0
        self._store(key, tokens, now)
        return (cost - tokens) / self.rate.per_second

    def wait(self, key: Hashable, cost: float = 1.0) -> float:
        """Like `take` without taking: 0.0 when `cost` is available now, else the seconds
        until it will be. Does not create a bucket for an unknown key."""
        if self.rate.unlimited or key not in self._buckets:
            return 0.0
        tokens = self._level(key, self._clock())
        return 0.0 if tokens >= cost else (cost - tokens) / self.rate.per_second

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, key: Hashable, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.rate.burst
        tokens, stamp = bucket
        return min(self.rate.burst, tokens + max(0.0, now - stamp) * self.rate.per_second)

    def _store(self, key: Hashable, tokens: float, now: float) -> None:
        self._buckets.pop(key, None)  # re-inserted last: the most recently used
        if tokens >= self.rate.burst:
            return  # a full bucket is what an unknown key gets: nothing to remember
        while len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = (tokens, now)


def retry_after_seconds(wait: float) -> int:
    """A `Retry-After` value: whole seconds, at least 1."""
    return max(1, math.ceil(wait))
