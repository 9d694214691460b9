"""The lifecycle: what follows a delivery or a report. An attempt ends with a result (the
task completes), or without one (the retry policy chooses retry, fail-over or giving up),
and the task ends; every step is announced through the one notifier."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from agent_mesh.api.meshtask import MeshTaskReason, payload_size_error
from agent_mesh.coordinator.book import TaskBook
from agent_mesh.coordinator.notifier import Notifier
from agent_mesh.coordinator.outcomes import Verdict, classify
from agent_mesh.coordinator.queues import Queues
from agent_mesh.coordinator.status_sync import StatusSync
from agent_mesh.coordinator.timers import TimerKind, Timers
from agent_mesh.coordinator.tracked import Tracked
from agent_mesh.domain.clock import Clock
from agent_mesh.domain.errors import ConflictError, ForbiddenError, NotFoundError
from agent_mesh.domain.health import HealthTracker
from agent_mesh.domain.retry import AttemptOutcome, RetryAction, RetryPolicy
from agent_mesh.domain.routing import Router
from agent_mesh.domain.tasks import IN_FLIGHT_PHASES, TaskPhase, TaskState
from agent_mesh.transport.client import Delivery


class Lifecycle:
    """Attempt ended, completed, given up; the agent's slot released as each ends."""

    def __init__(
        self,
        *,
        book: TaskBook,
        queues: Queues,
        status: StatusSync,
        notifier: Notifier,
        timers: Timers,
        router: Router,
        tracker: HealthTracker,
        policy: RetryPolicy,
        clock: Clock,
        result_max_bytes: int,
        wake: Callable[[], None],
    ) -> None:
        self._book = book
        self._queues = queues
        self._status = status
        self._notifier = notifier
        self._timers = timers
        self._router = router
        self._tracker = tracker
        self._policy = policy
        self._clock = clock
        self._result_max_bytes = result_max_bytes
        self._wake = wake

    def delivered(self, tracked: Tracked, delivery: Delivery) -> None:
        """A dispatch's answer; a 202 arms the attempt's timeout, the agent reports later."""
        state = tracked.state
        judged = classify(delivery, state.agent_id, state.timeout_seconds)
        if judged.verdict is Verdict.COMPLETED:
            self.complete(tracked, judged.result)
        elif judged.verdict is Verdict.ACCEPTED:
            deadline = state.deadline()
            if deadline is not None:
                self._timers.at(deadline, TimerKind.TIMEOUT, state.key)
        else:
            self.attempt_ended(tracked, judged.attempt_outcome, judged.message)

    def report(
        self, key: str, namespace: str, agent_id: str, attempt: int, result: Any, error: str | None
    ) -> TaskState:
        """An agent's later answer (see Coordinator.report)."""
        tracked = self._book.get(key)
        if tracked is None:
            raise NotFoundError(f"task {key} is not in flight", field="id")
        state = tracked.state
        if state.namespace != namespace or state.agent_id != agent_id:
            raise ForbiddenError(
                f"task {key} is not assigned to agent {namespace}/{agent_id}",
                field="id",
                code="NotYourTask",
            )
        if state.attempt != attempt or state.phase not in IN_FLIGHT_PHASES:
            raise ConflictError(
                f"attempt {attempt} of task {key} is not running (current attempt "
                f"{state.attempt}, phase {state.phase.value})",
                field="attempt",
                code="StaleAttempt",
            )
        tracked.stop_dispatch()  # the answer overtook the dispatch call's own
        if error is not None:
            message = f"agent {agent_id} failed the task: {error}"
            self.attempt_ended(tracked, AttemptOutcome.FAILED, message)
        else:
            self.complete(tracked, result)
        return state

    def timed_out(self, key: str) -> None:
        """The TIMEOUT timer handler: an accepted attempt's time is up without a report."""
        tracked = self._book.get(key)
        if tracked is None or tracked.state.phase not in IN_FLIGHT_PHASES:
            return
        state = tracked.state
        deadline = state.deadline()
        if deadline is not None and deadline <= self._clock.now():
            self.attempt_ended(
                tracked,
                AttemptOutcome.TIMED_OUT,
                f"agent {state.agent_id} did not report a result within {state.timeout_seconds} s",
            )

    def fail_over(self, namespace: str, agent_id: str, why: str) -> None:
        """The agent is gone or unreachable: its tasks go elsewhere, using no retry."""
        for tracked in self._book.running_on(namespace, agent_id):
            tracked.stop_dispatch()
            self.attempt_ended(tracked, AttemptOutcome.UNREACHABLE, why)
        self._wake()

    def refuse_oversized(self, tracked: Tracked) -> bool:
        """A task whose payload is over the limit, or no JSON, fails at once (True)."""
        try:
            too_big = payload_size_error(tracked.state.payload)
        except TypeError as error:
            too_big = f"spec.payload is not JSON: {error}"
        if too_big is None:
            return False
        self.give_up(tracked, TaskPhase.FAILED, too_big, MeshTaskReason.PAYLOAD_TOO_LARGE)
        return True

    def complete(self, tracked: Tracked, result: Any) -> None:
        state = tracked.state
        now = self._clock.now()
        self.release(tracked)
        too_big = payload_size_error(result, "result", self._result_max_bytes)
        if too_big is not None:
            state.attempt_ended(AttemptOutcome.FAILED, too_big, now)
            self.give_up(tracked, TaskPhase.FAILED, too_big, MeshTaskReason.RESULT_TOO_LARGE)
            return
        self._count(state, succeeded=True, now=now)
        state.complete(result, now)
        self._notifier.completed(state, now)
        self._finished(tracked)

    def attempt_ended(
        self, tracked: Tracked, outcome: AttemptOutcome, error: str, *, release: bool = True
    ) -> None:
        """The attempt ended without a result. `release=False`: its slot was never taken
        by this operator (a task found in flight after a restart)."""
        state = tracked.state
        now = self._clock.now()
        if release:
            self.release(tracked)
        else:
            self._book.unplace(tracked)
        if outcome in (AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT):
            self._count(state, succeeded=False, now=now)
        state.attempt_ended(outcome, error, now)
        decision = self._policy.decide(state.outcomes(), retries=state.retries, finished_at=now)
        if decision.action in (RetryAction.RETRY, RetryAction.FAIL_OVER):
            assert decision.at is not None
            state.retry_at(decision.at, (MeshTaskReason.RETRY_SCHEDULED.value, decision.message))
            tracked.reported_waiting = state.waiting
            self._notifier.retrying(state, error, decision.message)
            self._status.dirty(tracked)
            self._queues.enqueue(tracked)
            return
        if decision.action is RetryAction.TIMED_OUT:
            phase, reason = TaskPhase.TIMED_OUT, MeshTaskReason.ATTEMPT_TIMED_OUT
        else:
            phase, reason = TaskPhase.FAILED, MeshTaskReason.RETRIES_EXHAUSTED
        self.give_up(tracked, phase, f"{error}; {decision.message}", reason)

    def give_up(
        self, tracked: Tracked, phase: TaskPhase, error: str, reason: MeshTaskReason
    ) -> None:
        state = tracked.state
        state.give_up(phase, error, self._clock.now())
        state.waiting = (reason.value, error)
        self._notifier.gave_up(state, phase, error, reason)
        self._finished(tracked)

    def release(self, tracked: Tracked) -> None:
        """The attempt no longer holds its agent's slot."""
        state = tracked.state
        if state.agent_id is not None and self._book.unplace(tracked):
            self._router.release(state.namespace, state.agent_id)
            self._wake()

    def _finished(self, tracked: Tracked) -> None:
        if tracked.done is not None and not tracked.done.done():
            tracked.done.set_result(tracked.state)
        self._status.finished(tracked)
        self._wake()

    def _count(self, state: TaskState, *, succeeded: bool, now: dt.datetime) -> None:
        """Per-agent analytics (MeshAgent status completedTasks, failedTasks,
        avgExecutionMs), written with the agent's next coalesced status write."""
        current = state.current
        if state.agent_id is None or current is None:
            return
        duration = (now - current.started_at).total_seconds() * 1000
        self._tracker.task_finished((state.namespace, state.agent_id), succeeded, duration)
