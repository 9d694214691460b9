"""Restart reconciliation: tasks a previous operator left Assigned or Running.

Each goes back to the same agent with the same attempt: an SDK agent answers a
redelivered (uid, attempt) with the first run's result, or joins the run still going, so
nothing runs twice and nothing is lost. Unless the attempt's time ran out during the
restart (it times out, without a dispatch), or the agent is gone or unreachable (the
task fails over, using no retry). The task watch may deliver before the agent watch, so
a task whose agent is not known yet waits for it, up to the grace.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from agent_mesh.coordinator.book import TaskBook
from agent_mesh.coordinator.dispatch import Dispatcher
from agent_mesh.coordinator.lifecycle import Lifecycle
from agent_mesh.coordinator.queues import Queues
from agent_mesh.coordinator.status_sync import StatusSync
from agent_mesh.coordinator.timers import TimerKind, Timers
from agent_mesh.coordinator.tracked import Tracked
from agent_mesh.domain.agents import AgentRegistry
from agent_mesh.domain.clock import Clock
from agent_mesh.domain.health import HealthStatus, HealthTracker
from agent_mesh.domain.retry import AttemptOutcome
from agent_mesh.domain.routing import Router
from agent_mesh.domain.tasks import IN_FLIGHT_PHASES, TaskPhase

RECONCILE_GRACE: Final = dt.timedelta(seconds=30)
"""After a restart, how long a running task waits for its agent to be seen again."""


class Reconciler:
    """Takes back tasks found in flight; see the module docstring."""

    def __init__(
        self,
        *,
        book: TaskBook,
        registry: AgentRegistry,
        tracker: HealthTracker,
        router: Router,
        clock: Clock,
        timers: Timers,
        queues: Queues,
        lifecycle: Lifecycle,
        status: StatusSync,
        dispatcher: Dispatcher,
        grace: dt.timedelta = RECONCILE_GRACE,
    ) -> None:
        self._book = book
        self._registry = registry
        self._tracker = tracker
        self._router = router
        self._clock = clock
        self._timers = timers
        self._queues = queues
        self._lifecycle = lifecycle
        self._status = status
        self._dispatcher = dispatcher
        self._grace = grace

    def reconcile(self, tracked: Tracked, *, gone: bool = False) -> None:
        """Ask the task's agent again for the same attempt, unless the attempt's time is
        up or the agent is gone (`gone`: its grace passed without it)."""
        state = tracked.state
        agent_id = state.agent_id
        now = self._clock.now()
        if agent_id is None or state.current is None:
            state.phase = TaskPhase.PENDING
            self._queues.enqueue(tracked)
            return
        self._book.place(tracked)
        deadline = state.deadline()
        if deadline is not None and deadline <= now:
            why = f"agent {agent_id} did not finish within {state.timeout_seconds} s"
            self._lifecycle.attempt_ended(tracked, AttemptOutcome.TIMED_OUT, why, release=False)
            return
        record = self._registry.get(state.namespace, agent_id)
        if record is None and not gone:
            self._book.await_agent(tracked)
            self._timers.at(now + self._grace, TimerKind.RECONCILE, state.key)
            return
        health = self._tracker.get((state.namespace, agent_id))
        if record is None or (health is not None and health.health is HealthStatus.UNREACHABLE):
            why = f"agent {agent_id} is gone or unreachable"
            self._lifecycle.attempt_ended(tracked, AttemptOutcome.UNREACHABLE, why, release=False)
            return
        self._router.assign(state.namespace, agent_id)
        if state.phase is TaskPhase.ASSIGNED:
            state.run(now)
            self._status.dirty(tracked)
        self._dispatcher.start(tracked)

    def agent_seen(self, namespace: str, agent_id: str) -> None:
        """An agent appeared: the tasks that waited for it are sent to it again."""
        for tracked in self._book.arrived(namespace, agent_id):
            self.reconcile(tracked)

    def grace_over(self, key: str) -> None:
        """The RECONCILE timer handler: the agent was not seen in time; fail the task over."""
        tracked = self._book.get(key)
        if tracked is None or tracked.state.phase not in IN_FLIGHT_PHASES:
            return
        if self._book.stop_awaiting(tracked):
            self.reconcile(tracked, gone=True)
