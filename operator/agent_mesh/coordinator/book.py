"""The task book: every task the coordinator tracks, the finished ones it still remembers
(tombstones), which tasks each agent runs, and which tasks a restarted operator found in
flight on an agent it has not seen yet."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Final

from agent_mesh.coordinator.tracked import Tracked, WriteState
from agent_mesh.domain.conditions import Condition
from agent_mesh.domain.tasks import IN_FLIGHT_PHASES, TaskState

TOMBSTONES_MAX: Final = 100_000
"""Finished tasks remembered so that late watch events about them are ignored."""

AgentKey = tuple[str, str]


class TaskBook:
    """Tasks by key, tombstones, and two indexes by agent (running on it, waiting for it)."""

    def __init__(self, tombstones_max: int = TOMBSTONES_MAX) -> None:
        self._tasks: dict[str, Tracked] = {}
        self._tombstones: OrderedDict[str, None] = OrderedDict()
        self._tombstones_max = tombstones_max
        self._running: dict[AgentKey, set[str]] = {}
        self._awaiting: dict[AgentKey, set[str]] = {}
        self._seq = itertools.count()

    def track(
        self,
        state: TaskState,
        resource_version: str | None = None,
        conditions: Iterable[Condition] | None = None,
    ) -> Tracked:
        """Take on `state`; a durable task gets its write bookkeeping, seeded from the
        status it was read with (its attempt counts as written)."""
        writes = None
        if state.durable:
            writes = WriteState(resource_version, list(conditions or ()), state.attempt)
        tracked = Tracked(state, next(self._seq), writes)
        self._tasks[state.key] = tracked
        return tracked

    def get(self, key: str) -> Tracked | None:
        return self._tasks.get(key)

    def holds(self, tracked: Tracked) -> bool:
        """`tracked` is still the book's record of its task (not dropped, not replaced)."""
        return self._tasks.get(tracked.key) is tracked

    def known(self, key: str) -> bool:
        """Tracked now, or finished and remembered."""
        return key in self._tasks or key in self._tombstones

    def drop(self, key: str, *, tombstone: bool = False) -> Tracked | None:
        """Stop tracking `key`. With `tombstone`, remember that it finished: the watch may
        still deliver events older than its final write (the echo of its Running write),
        and those must not look like a task a previous operator left running."""
        tracked = self._tasks.pop(key, None)
        if tombstone:
            self._tombstones[key] = None
            if len(self._tombstones) > self._tombstones_max:
                self._tombstones.popitem(last=False)
        else:
            self._tombstones.pop(key, None)
        if tracked is not None and tracked.state.agent_id is not None:
            waiting = self._awaiting.get((tracked.state.namespace, tracked.state.agent_id))
            if waiting is not None:
                waiting.discard(key)
        return tracked

    def __iter__(self) -> Iterator[Tracked]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)

    # --- which agent runs what -----------------------------------------------------------

    def place(self, tracked: Tracked) -> None:
        """The task's current attempt runs on its agent."""
        state = tracked.state
        assert state.agent_id is not None
        self._running.setdefault((state.namespace, state.agent_id), set()).add(state.key)

    def unplace(self, tracked: Tracked) -> bool:
        """The attempt no longer runs on its agent; True when it did until now."""
        state = tracked.state
        if state.agent_id is None:
            return False
        running = self._running.get((state.namespace, state.agent_id))
        if running is None or state.key not in running:
            return False
        running.discard(state.key)
        return True

    def running_on(self, namespace: str, agent_id: str) -> list[Tracked]:
        """The tasks in flight on agent `namespace/agent_id`."""
        return self._in_flight(self._running.get((namespace, agent_id), ()))

    # --- after a restart: tasks whose agent has not been seen yet ------------------------

    def await_agent(self, tracked: Tracked) -> None:
        state = tracked.state
        assert state.agent_id is not None
        self._awaiting.setdefault((state.namespace, state.agent_id), set()).add(state.key)

    def arrived(self, namespace: str, agent_id: str) -> list[Tracked]:
        """The agent was seen: the in-flight tasks that waited for it (no longer waiting)."""
        return self._in_flight(self._awaiting.pop((namespace, agent_id), ()))

    def stop_awaiting(self, tracked: Tracked) -> bool:
        """True when `tracked` waited for its agent (and waits no more)."""
        state = tracked.state
        waiting = self._awaiting.get((state.namespace, state.agent_id or ""))
        if waiting is None or state.key not in waiting:
            return False
        waiting.discard(state.key)
        return True

    def _in_flight(self, keys: Iterable[str]) -> list[Tracked]:
        """The tracked tasks among `keys` that are Assigned or Running (a snapshot)."""
        found = (self._tasks.get(key) for key in keys)
        return [t for t in found if t is not None and t.state.phase in IN_FLIGHT_PHASES]
