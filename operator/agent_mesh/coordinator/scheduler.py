"""The scheduler: takes pending tasks highest priority and oldest first, asks the Router
for an agent, and places each task it can until every shape of waiting task is blocked.

Placing a task takes the agent's slot, starts the attempt (the coordinator writes Running
directly: choosing the agent and sending the task happen together), asks for an urgent
status write (the dispatch waits for it) and starts the dispatch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time

from agent_mesh.coordinator.book import TaskBook
from agent_mesh.coordinator.dispatch import Dispatcher
from agent_mesh.coordinator.notifier import Notifier
from agent_mesh.coordinator.queues import Queues
from agent_mesh.coordinator.status_sync import StatusSync
from agent_mesh.coordinator.tracked import Shape, Tracked
from agent_mesh.domain.routing import Router


class Scheduler:
    """Places queued tasks on agents; `place_all` is one pass of the scheduler loop."""

    def __init__(
        self,
        *,
        book: TaskBook,
        queues: Queues,
        router: Router,
        status: StatusSync,
        dispatcher: Dispatcher,
        notifier: Notifier,
    ) -> None:
        self._book = book
        self._queues = queues
        self._router = router
        self._status = status
        self._dispatcher = dispatcher
        self._notifier = notifier

    def place_all(self, now: dt.datetime) -> None:
        """Place tasks, highest priority and oldest first, until every shape of waiting
        task is blocked (a shape whose head finds no agent waits as a whole)."""
        blocked: set[Shape] = set()
        while (picked := self._queues.pop_next(blocked)) is not None:
            shape, entry = picked
            tracked = entry.item
            if not self._book.holds(tracked):
                continue  # deleted meanwhile
            if not self._place(tracked, now):
                self._queues.put_back(shape, entry)
                blocked.add(shape)

    def _place(self, tracked: Tracked, now: dt.datetime) -> bool:
        state = tracked.state
        demand = state.demand
        if state.attempts:  # prefer an agent not tried yet
            demand = dataclasses.replace(demand, exclude=state.tried())
        started = time.perf_counter()
        decision = self._router.route(demand)
        self._notifier.routed(time.perf_counter() - started)
        if decision.agent_id is None:
            self._queues.waiting(tracked, decision)
            return False
        self._queues.placed(tracked)
        self._router.assign(state.namespace, decision.agent_id)
        state.assign(decision.agent_id, now)
        state.run(now)
        self._book.place(tracked)
        self._notifier.assigned(state, decision.strategy)
        tracked.reported_waiting = None
        self._status.dirty(tracked, urgent=True)
        self._dispatcher.start(tracked)
        return True
