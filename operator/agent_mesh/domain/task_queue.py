"""The coordinator's queue of pending tasks: critical > high > medium > low, FIFO within one.

One deque per priority rather than a heap: pushes and pops are O(1), and with its
bookkeeping the queue still beat a bare heapq at 100,000 tasks (bench/routing_bench.py).
Every entry carries a sequence number fixed when its task first arrived, and each deque
stays sorted by it, so a task put back after it could not be placed (or moved to another
priority) returns to the place its age gives it. Removal is lazy: the key leaves the
index at once (O(1)) and the stale entry is skipped when it reaches the front, or dropped
when the deques are compacted.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from itertools import chain, count
from typing import Final, Generic, TypeVar

T = TypeVar("T")


class Priority(StrEnum):
    """Queue order: critical before high before medium before low, FIFO within one."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


PRIORITY_RANK: Final = {
    Priority.CRITICAL: 0,
    Priority.HIGH: 1,
    Priority.MEDIUM: 2,
    Priority.LOW: 3,
}
"""Lower goes first: the order in which priorities leave a queue."""
_BY_RANK: Final = sorted(PRIORITY_RANK, key=PRIORITY_RANK.__getitem__)

_COMPACT_MIN: Final = 1024
"""Stale entries are swept once there are this many and more of them than live ones."""


@dataclass(slots=True, eq=False)
class QueueEntry(Generic[T]):
    """A queued task: its key, the caller's item, its priority, and its place in line.

    `seq` is fixed when the key is first pushed; treat entries as read-only.
    """

    key: str
    item: T
    priority: Priority
    seq: int


def _seq_of(entry: QueueEntry[T]) -> int:
    return entry.seq


class TaskQueue(Generic[T]):
    """Pending tasks keyed by a string (a task uid), in priority then arrival order."""

    def __init__(self) -> None:
        self._lanes: tuple[deque[QueueEntry[T]], ...] = tuple(deque() for _ in _BY_RANK)
        self._live: dict[str, QueueEntry[T]] = {}
        self._stale = 0
        self._seq = count()

    def push(self, key: str, item: T, priority: Priority = Priority.MEDIUM) -> bool:
        """Queue `item` under `key`; True when the key was new.

        Pushing a queued key again replaces its item and priority but keeps its arrival
        order, so a re-delivered watch event never sends a task to the back of the line.
        """
        current = self._live.get(key)
        if current is None:
            entry = QueueEntry(key, item, priority, next(self._seq))
            self._live[key] = entry
            self._lanes[PRIORITY_RANK[priority]].append(entry)
            return True
        if current.priority is priority:
            current.item = item
            return False
        self._insert(QueueEntry(key, item, priority, current.seq))
        self._stale += 1  # the old entry stays in its lane until skipped or swept
        return False

    def requeue(self, entry: QueueEntry[T]) -> bool:
        """Put back a popped entry at the place its original arrival gives it (a task that
        could not be placed keeps its turn). False, and nothing queued, when its key was
        pushed again in the meantime."""
        if entry.key in self._live:
            return False
        self._insert(entry)
        return True

    def pop(self) -> QueueEntry[T] | None:
        """Take the next task: the oldest of the highest priority; None when empty."""
        for lane in self._lanes:
            while lane:
                entry = lane.popleft()
                if self._live.get(entry.key) is entry:
                    del self._live[entry.key]
                    return entry
                self._stale -= 1
        return None

    def peek(self) -> QueueEntry[T] | None:
        """The entry `pop` would return, left in place."""
        for lane in self._lanes:
            while lane:
                entry = lane[0]
                if self._live.get(entry.key) is entry:
                    return entry
                lane.popleft()
                self._stale -= 1
        return None

    def remove(self, key: str) -> QueueEntry[T] | None:
        """Drop a pending task (deleted or cancelled); its entry, or None if not queued."""
        entry = self._live.pop(key, None)
        if entry is not None:
            self._stale += 1
            if self._stale >= _COMPACT_MIN and self._stale > len(self._live):
                self._compact()
        return entry

    def get(self, key: str) -> QueueEntry[T] | None:
        return self._live.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[QueueEntry[T]]:
        """Live entries in the order `pop` would return them (a snapshot)."""
        live = self._live
        return iter([e for e in chain.from_iterable(self._lanes) if live.get(e.key) is e])

    def _insert(self, entry: QueueEntry[T]) -> None:
        """Place `entry` by its sequence number: at the front in the usual case (it was
        just popped from there), by binary search otherwise."""
        self._live[entry.key] = entry
        lane = self._lanes[PRIORITY_RANK[entry.priority]]
        if not lane or entry.seq < lane[0].seq:
            lane.appendleft(entry)
        elif entry.seq > lane[-1].seq:
            lane.append(entry)
        else:
            lane.insert(bisect.bisect_left(lane, entry.seq, key=_seq_of), entry)

    def _compact(self) -> None:
        live = self._live
        self._lanes = tuple(deque(e for e in lane if live.get(e.key) is e) for lane in self._lanes)
        self._stale = 0
