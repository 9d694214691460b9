"""The coordinator: takes tasks (MeshTasks from the watch, fast-path tasks from the mesh
API), queues them by priority, routes each to a capable agent, dispatches it with the
operator's own token, and turns every outcome into the next step (DESIGN §4).

One scheduler loop owns routing; each dispatched attempt is its own asyncio task. Timers
(retry backoff, async-result timeouts, TTL deletion) sit in one heap, derived from status
timestamps, so a restart neither resets nor loses them. Status is written per task by one
writer at a time, coalescing: a task that goes Pending → Running → Completed within the
coalescing window costs one write.

Delivery is at least once. After a restart, a task found Running is sent again to the same
agent with the same attempt number: an SDK agent answers a redelivered (uid, attempt)
with the first run's result, or joins the run still going, so nothing runs twice there
and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import heapq
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from agent_mesh.api.meshtask import MeshTaskReason, payload_size_error
from agent_mesh.auth.audit import AuditLog
from agent_mesh.auth.authority import Authority
from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.clock import Clock
from agent_mesh.domain.conditions import Condition
from agent_mesh.domain.discovery import view_of
from agent_mesh.domain.egress import EgressClass
from agent_mesh.domain.health import HealthStatus, HealthTracker
from agent_mesh.domain.retry import AttemptOutcome, RetryAction, RetryPolicy
from agent_mesh.domain.routing import Router, RoutingDecision
from agent_mesh.domain.task_queue import Priority, TaskQueue
from agent_mesh.domain.tasks import IN_FLIGHT_PHASES, TaskPhase, TaskState, task_from_body
from agent_mesh.kube.events import EventPoster, ObjectRef
from agent_mesh.kube.task_status import task_status
from agent_mesh.observability.metrics import (
    ROUTING_DURATION,
    TASK_DURATION,
    TASKS,
    TASKS_COMPLETED,
    TASKS_FAILED,
)
from agent_mesh.transport.client import Delivery, Outcome, Transport, TransportConfig

logger = logging.getLogger("agent_mesh.coordinator")
TASKS_PATH: Final = "/v1/tasks"
COALESCE_SECONDS: Final = 0.05
"""How long a status change waits for the next one before it is written."""
WRITE_RETRY_SECONDS: Final = 1.0
TOMBSTONES_MAX: Final = 100_000
"""Finished tasks remembered so that late watch events about them are ignored."""
RECONCILE_GRACE: Final = dt.timedelta(seconds=30)
"""After a restart, how long a running task waits for its agent to be seen again."""
_RANK: Final = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.MEDIUM: 2, Priority.LOW: 3}
# Answers that say the agent did not take the task: fail over, using no retry.
_NOT_TAKEN_STATUS: Final = frozenset({502, 503, 504})
_NOT_TAKEN_OUTCOMES: Final = frozenset(
    {Outcome.CONNECT_ERROR, Outcome.TLS_ERROR, Outcome.NO_ENDPOINT}
)


class TaskWriter(Protocol):
    async def write(
        self, state: TaskState, status: dict[str, Any], resource_version: str | None
    ) -> tuple[str, dict[str, Any] | None]: ...

    async def delete(self, state: TaskState) -> None: ...


@dataclass(eq=False)
class _Tracked:
    """A task and the coordinator's bookkeeping for it."""

    state: TaskState
    seq: int
    resource_version: str | None = None
    conditions: list[Condition] = field(default_factory=list)
    dispatch: asyncio.Task[None] | None = None
    dirty: bool = False
    writing: bool = False
    done: asyncio.Future[TaskState] | None = None
    reported_waiting: tuple[str, str] | None = None
    persisted_attempt: int = 0
    """The attempt number status held at the last successful write."""
    written: asyncio.Event | None = None
    """Set by each status write; made only when a dispatch waits for one."""
    hurry: asyncio.Event | None = None
    """Cuts the coalescing wait short; exists only while a write is pending."""
    urgent: bool = False

    @property
    def shape(self) -> tuple[Any, ...]:
        d = self.state.demand
        return (
            d.namespace,
            d.required_capabilities,
            d.agent_type,
            tuple(sorted(d.labels.items())),
            d.agent_ref,
            d.strategy,
        )


class Coordinator:
    """See the module docstring. Feed it agents and tasks; `run()` until cancelled."""

    def __init__(
        self,
        *,
        registry: AgentRegistry,
        tracker: HealthTracker,
        authority: Authority,
        audit: AuditLog,
        clock: Clock,
        writer: TaskWriter | None = None,
        events: EventPoster | None = None,
        router: Router | None = None,
        policy: RetryPolicy | None = None,
        transport: Transport | None = None,
        result_max_bytes: int = 262144,
    ) -> None:
        self.registry = registry
        self.tracker = tracker
        self.authority = authority
        self.audit = audit
        self.clock = clock
        self.writer = writer
        self.events = events
        self.router = router or Router()
        self.policy = policy or RetryPolicy()
        # the router bounds work per agent; the pool only has to keep up with it
        self.transport = transport or Transport(
            TransportConfig(max_connections_per_agent=100, retries=0)
        )
        self.result_max_bytes = result_max_bytes
        self._tasks: dict[str, _Tracked] = {}
        self._queues: dict[tuple[Any, ...], TaskQueue[_Tracked]] = {}
        self._timers: list[tuple[dt.datetime, int, str, str]] = []
        self._on_agent: dict[tuple[str, str], set[str]] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._ttl_seconds: dict[str, int] = {}
        self._expiring: dict[str, TaskState] = {}
        self._gauged = 0.0
        self._awaiting_agent: dict[tuple[str, str], set[str]] = {}
        self._tombstones: OrderedDict[str, None] = OrderedDict()
        self._shape_waiting: dict[tuple[Any, ...], tuple[str, str]] = {}

    # --- agents -------------------------------------------------------------------------

    def agent_seen(self, record: AgentRecord) -> None:
        """A MeshAgent was added or changed (the registry accepted it)."""
        self.router.upsert(record)
        health = self.tracker.get((record.namespace, record.agent_id))
        if health is not None:
            self.router.set_health(record.namespace, record.agent_id, health.health)
        for key in self._awaiting_agent.pop((record.namespace, record.agent_id), ()):
            tracked = self._tasks.get(key)
            if tracked is not None and tracked.state.phase in IN_FLIGHT_PHASES:
                self._reconcile(tracked)
        self._wake.set()

    def agent_gone(self, namespace: str, agent_id: str) -> None:
        self.router.remove(namespace, agent_id)
        self._fail_over(namespace, agent_id, f"agent {namespace}/{agent_id} was deleted")

    async def health_changed(self, event: Mapping[str, Any]) -> None:
        """A HealthMonitor listener: degraded agents get no new work; unreachable ones
        lose their running tasks to others, using no retry."""
        namespace, agent_id = str(event["namespace"]), str(event["agentId"])
        health = HealthStatus(str(event["health"]))
        self.router.set_health(namespace, agent_id, health)
        if health is HealthStatus.UNREACHABLE:
            self._fail_over(namespace, agent_id, f"agent {agent_id} became unreachable")
        self._wake.set()

    def _fail_over(self, namespace: str, agent_id: str, why: str) -> None:
        for key in list(self._on_agent.get((namespace, agent_id), ())):
            tracked = self._tasks.get(key)
            if tracked is None or tracked.state.phase not in IN_FLIGHT_PHASES:
                continue
            if tracked.dispatch is not None:
                tracked.dispatch.cancel()
                tracked.dispatch = None
            self._attempt_ended(tracked, AttemptOutcome.UNREACHABLE, why)
        self._wake.set()

    # --- tasks in -----------------------------------------------------------------------

    def observe(self, body: Mapping[str, Any]) -> None:
        """A MeshTask from the watch: new ones are taken on (including, after a restart,
        those a previous operator left in flight); known ones are ours already."""
        meta = body.get("metadata") or {}
        key = str(meta.get("uid") or "")
        if not key or key in self._tasks or key in self._tombstones:
            return
        if meta.get("deletionTimestamp"):
            return
        state = task_from_body(body)
        status = body.get("status") or {}
        if state.finished:
            self._schedule_ttl(state, body)
            return
        tracked = self._track(state, meta.get("resourceVersion"), status.get("conditions"))
        ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is not None:
            self._ttl_seconds[key] = int(ttl)
        too_big = _payload_error(state.payload)
        if too_big is not None:
            self._give_up(tracked, TaskPhase.FAILED, too_big, MeshTaskReason.PAYLOAD_TOO_LARGE)
            return
        if state.phase in IN_FLIGHT_PHASES:
            self._reconcile(tracked)
        else:
            state.phase = TaskPhase.PENDING
            if not status.get("phase"):
                self._dirty(tracked)  # a new task shows Pending (unless routed at once)
            self._enqueue(tracked)

    def forget(self, key: str) -> None:
        """The MeshTask was deleted: drop it, wherever it is."""
        tracked = self._tasks.pop(key, None)
        self._ttl_seconds.pop(key, None)
        self._tombstones.pop(key, None)
        if tracked is None:
            return
        queue = self._queues.get(tracked.shape)
        if queue is not None:
            queue.remove(key)
        if tracked.dispatch is not None:
            tracked.dispatch.cancel()
        self._release(tracked)

    async def submit(self, state: TaskState) -> asyncio.Future[TaskState]:
        """A fast-path task: queued like any other; the future resolves when it ends."""
        tracked = self._track(state, None, None)
        tracked.done = asyncio.get_running_loop().create_future()
        self._enqueue(tracked)
        return tracked.done

    def get(self, key: str) -> TaskState | None:
        tracked = self._tasks.get(key)
        return tracked.state if tracked is not None else None

    def _track(self, state: TaskState, resource_version: str | None, conditions: Any) -> _Tracked:
        tracked = _Tracked(state, next(self._seq), resource_version, list(conditions or ()))
        tracked.persisted_attempt = state.attempt  # as read from status
        self._tasks[state.key] = tracked
        return tracked

    def _enqueue(self, tracked: _Tracked) -> None:
        state = tracked.state
        now = self.clock.now()
        if state.next_retry_at is not None and state.next_retry_at > now:
            self._timer(state.next_retry_at, state.key, "due")
        else:
            queue = self._queues.get(tracked.shape)
            if queue is None:
                queue = self._queues[tracked.shape] = TaskQueue()
            queue.push(state.key, tracked, state.priority)
            waiting = self._shape_waiting.get(tracked.shape)
            if waiting is not None:  # behind others that wait: it waits for the same
                self._say_waiting(tracked, waiting)
        self._wake.set()

    # --- the scheduler ------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            self._wake.clear()
            wait = self.schedule()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    def schedule(self) -> float | None:
        """Fire due timers, then place tasks, highest priority and oldest first, until
        every kind of waiting task is blocked; the seconds until the next timer."""
        now = self.clock.now()
        while self._timers and self._timers[0][0] <= now:
            _, _, key, kind = heapq.heappop(self._timers)
            self._fire(kind, key)
        blocked: set[tuple[Any, ...]] = set()
        while True:
            best: tuple[tuple[int, int], tuple[Any, ...], TaskQueue[_Tracked]] | None = None
            for shape, queue in list(self._queues.items()):
                if shape in blocked:
                    continue
                head = queue.peek()
                if head is None:
                    del self._queues[shape]
                    continue
                order = (_RANK[head.priority], head.item.seq)
                if best is None or order < best[0]:
                    best = (order, shape, queue)
            if best is None:
                break
            _, shape, queue = best
            entry = queue.pop()
            assert entry is not None
            tracked = entry.item
            if self._tasks.get(tracked.state.key) is not tracked:
                continue  # deleted meanwhile
            if not self._place(tracked, now):
                queue.requeue(entry)
                blocked.add(shape)
        self._gauge()
        if not self._timers:
            return None
        return max(0.0, (self._timers[0][0] - self.clock.now()).total_seconds())

    def _place(self, tracked: _Tracked, now: dt.datetime) -> bool:
        state = tracked.state
        demand = state.demand
        if state.attempts:
            demand = dataclasses.replace(demand, exclude=state.tried())
        started = time.perf_counter()
        decision = self.router.route(demand)
        ROUTING_DURATION.observe(time.perf_counter() - started)
        if decision.agent_id is None:
            self._waiting(tracked, decision)
            return False
        agent_id = decision.agent_id
        self._shape_waiting.pop(tracked.shape, None)
        self.router.assign(state.namespace, agent_id)
        state.assign(agent_id, now)
        state.run(now)
        self._on_agent.setdefault((state.namespace, agent_id), set()).add(state.key)
        self.audit.record(
            "task.assigned",
            f"task {state.ref} attempt {state.attempt} assigned to agent {agent_id}",
            namespace=state.namespace,
            task=state.name or state.key,
            agentId=agent_id,
            attempt=state.attempt,
            strategy=decision.strategy,
        )
        self._event(
            tracked,
            "Normal",
            "TaskAssigned",
            f"Attempt {state.attempt} sent to agent {agent_id} ({decision.strategy}).",
        )
        tracked.reported_waiting = None
        self._dirty(tracked, urgent=True)
        self._start_dispatch(tracked)
        return True

    def _waiting(self, tracked: _Tracked, decision: RoutingDecision) -> None:
        """Every task queued behind `tracked` waits for the same reason: each gets the
        condition (once per change of reason), the head of the line an Event too."""
        reason = decision.reason.value if decision.reason else MeshTaskReason.QUEUED.value
        waiting = (reason, decision.message or "Waiting for an agent.")
        if self._shape_waiting.get(tracked.shape) == waiting:
            self._say_waiting(tracked, waiting)
            return
        self._shape_waiting[tracked.shape] = waiting
        if self._say_waiting(tracked, waiting):
            self._event(tracked, "Normal", reason, waiting[1])
        for entry in self._queues.get(tracked.shape) or ():
            self._say_waiting(entry.item, waiting)

    def _say_waiting(self, tracked: _Tracked, waiting: tuple[str, str]) -> bool:
        if waiting == tracked.reported_waiting or tracked.state.next_retry_at is not None:
            return False
        tracked.reported_waiting = waiting
        tracked.state.waiting = waiting
        self._dirty(tracked)
        return True

    # --- dispatch -----------------------------------------------------------------------

    def _start_dispatch(self, tracked: _Tracked) -> None:
        tracked.dispatch = asyncio.get_running_loop().create_task(
            self._dispatch(tracked, tracked.state.attempt)
        )

    async def _dispatch(self, tracked: _Tracked, attempt: int) -> None:
        state = tracked.state
        if state.durable and self.writer is not None:
            # Write-ahead: status names the agent and attempt before the agent gets the
            # task, so after a crash the task goes back to the same agent, which answers
            # a redelivered (uid, attempt) without running it again.
            while tracked.persisted_attempt < attempt:
                if tracked.written is None:
                    tracked.written = asyncio.Event()
                tracked.written.clear()
                await tracked.written.wait()
        agent_id = state.agent_id
        assert agent_id is not None
        record = self.registry.get(state.namespace, agent_id)
        view = view_of(record, self.tracker) if record is not None else None
        endpoint = view.endpoint if view is not None else None
        deadline = state.deadline() or self.clock.now()
        remaining = (deadline - self.clock.now()).total_seconds()
        if endpoint is None:
            delivery = Delivery(agent_id, Outcome.NO_ENDPOINT, 0, error="no endpoint known")
        elif remaining <= 0:
            delivery = Delivery(endpoint, Outcome.TIMEOUT, 0, error="the attempt's time ran out")
        else:
            body = {
                "taskUid": state.key,
                "attempt": attempt,
                "taskType": state.task_type,
                "payload": state.payload,
                "metadata": state.metadata,
            }
            delivery = await self.transport.post(
                endpoint,
                TASKS_PATH,
                body,
                token=self.authority.operator_token(state.namespace),
                timeout_seconds=remaining,
                retries=0,
                egress=view.endpoint_class if view is not None else EgressClass.DECLARED,
            )
        if self._tasks.get(state.key) is not tracked or state.attempt != attempt:
            return  # deleted, failed over or reconciled meanwhile
        tracked.dispatch = None
        self._delivered(tracked, delivery)

    def _delivered(self, tracked: _Tracked, delivery: Delivery) -> None:
        state = tracked.state
        agent = state.agent_id
        if delivery.outcome is Outcome.OK:
            if delivery.status == 202:  # the agent will post the result; wait for it
                deadline = state.deadline()
                if deadline is not None:
                    self._timer(deadline, state.key, "timeout")
                return
            body = delivery.body if isinstance(delivery.body, dict) else {}
            if "result" not in body:
                self._attempt_ended(
                    tracked, AttemptOutcome.FAILED, f"agent {agent} answered without a result"
                )
                return
            self.accept_result(tracked, body["result"])
            return
        if delivery.outcome in _NOT_TAKEN_OUTCOMES or (
            delivery.outcome is Outcome.HTTP_ERROR and delivery.status in _NOT_TAKEN_STATUS
        ):
            what = delivery.code or delivery.outcome.value
            self._attempt_ended(
                tracked,
                AttemptOutcome.UNREACHABLE,
                f"agent {agent} did not take the task ({what}): {delivery.error or ''}".strip(),
            )
            return
        if delivery.outcome is Outcome.EGRESS_REFUSED:  # nothing sent; a retry may go elsewhere
            self._attempt_ended(
                tracked,
                AttemptOutcome.FAILED,
                f"agent {agent} was not called: {delivery.error or 'egress refused'}",
            )
            return
        if delivery.outcome is Outcome.TIMEOUT:
            self._attempt_ended(
                tracked,
                AttemptOutcome.TIMED_OUT,
                f"agent {agent} did not finish within {state.timeout_seconds} s",
            )
            return
        code = f"{delivery.code}: " if delivery.code else ""
        self._attempt_ended(
            tracked,
            AttemptOutcome.FAILED,
            f"agent {agent} failed the task ({delivery.status or delivery.outcome.value}) "
            f"{code}{delivery.error or ''}".strip(),
        )

    def accept_result(self, tracked: _Tracked, result: Any) -> None:
        state = tracked.state
        now = self.clock.now()
        too_big = payload_size_error(result, "result", self.result_max_bytes)
        if too_big is not None:
            self._release(tracked)
            state.attempt_ended(AttemptOutcome.FAILED, too_big, now)
            self._give_up(tracked, TaskPhase.FAILED, too_big, MeshTaskReason.RESULT_TOO_LARGE)
            return
        self._release(tracked)
        self._count(state, succeeded=True, now=now)
        state.complete(result, now)
        TASKS_COMPLETED.inc()
        TASK_DURATION.observe(max(0.0, (now - state.created_at).total_seconds()))
        self.audit.record(
            "task.completed",
            f"task {state.ref} completed by agent {state.agent_id}",
            namespace=state.namespace,
            task=state.name or state.key,
            agentId=state.agent_id,
            attempt=state.attempt,
            outcome="Completed",
        )
        self._event(
            tracked,
            "Normal",
            "TaskCompleted",
            f"Completed by agent {state.agent_id} on attempt {state.attempt}.",
        )
        self._finished(tracked)

    # --- after an attempt ---------------------------------------------------------------

    def _count(self, state: TaskState, *, succeeded: bool, now: dt.datetime) -> None:
        """Per-agent analytics (MeshAgent status completedTasks, failedTasks,
        avgExecutionMs), written with the agent's next coalesced status write."""
        current = state.current
        if state.agent_id is None or current is None:
            return
        duration = (now - current.started_at).total_seconds() * 1000
        self.tracker.task_finished((state.namespace, state.agent_id), succeeded, duration)

    def _attempt_ended(
        self, tracked: _Tracked, outcome: AttemptOutcome, error: str, *, release: bool = True
    ) -> None:
        state = tracked.state
        now = self.clock.now()
        if release:
            self._release(tracked)
        else:
            self._forget_placement(tracked)
        if outcome in (AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT):
            self._count(state, succeeded=False, now=now)
        state.attempt_ended(outcome, error, now)
        decision = self.policy.decide(state.outcomes(), retries=state.retries, finished_at=now)
        if decision.action in (RetryAction.RETRY, RetryAction.FAIL_OVER):
            assert decision.at is not None
            state.retry_at(decision.at, (MeshTaskReason.RETRY_SCHEDULED.value, decision.message))
            tracked.reported_waiting = state.waiting
            self._event(tracked, "Warning", "TaskRetrying", f"{error}. {decision.message}.")
            self._dirty(tracked)
            self._enqueue(tracked)
            return
        phase = (
            TaskPhase.TIMED_OUT if decision.action is RetryAction.TIMED_OUT else TaskPhase.FAILED
        )
        reason = (
            MeshTaskReason.ATTEMPT_TIMED_OUT
            if phase is TaskPhase.TIMED_OUT
            else MeshTaskReason.RETRIES_EXHAUSTED
        )
        self._give_up(tracked, phase, f"{error}; {decision.message}", reason)

    def _give_up(
        self, tracked: _Tracked, phase: TaskPhase, error: str, reason: MeshTaskReason
    ) -> None:
        state = tracked.state
        state.give_up(phase, error, self.clock.now())
        state.waiting = (reason.value, error)
        TASKS_FAILED.labels(reason=reason.value).inc()
        self.audit.record(
            "task.completed",
            f"task {state.ref} ended {phase.value}: {error}",
            namespace=state.namespace,
            task=state.name or state.key,
            agentId=state.agent_id,
            attempt=state.attempt,
            outcome=phase.value,
        )
        self._event(tracked, "Warning", f"Task{phase.value}", error)
        self._finished(tracked)

    def _finished(self, tracked: _Tracked) -> None:
        if tracked.done is not None and not tracked.done.done():
            tracked.done.set_result(tracked.state)
        self._dirty(tracked)
        self._wake.set()

    def _release(self, tracked: _Tracked) -> None:
        state = tracked.state
        if state.agent_id is not None and self._forget_placement(tracked):
            self.router.release(state.namespace, state.agent_id)
            self._wake.set()

    def _forget_placement(self, tracked: _Tracked) -> bool:
        state = tracked.state
        if state.agent_id is None:
            return False
        on = self._on_agent.get((state.namespace, state.agent_id))
        if on is None or state.key not in on:
            return False
        on.discard(state.key)
        return True

    # --- after a restart ----------------------------------------------------------------

    def _reconcile(self, tracked: _Tracked, *, gone: bool = False) -> None:
        """A task a previous operator left Assigned/Running: ask its agent again for the
        same attempt (it answers with the first result, or joins the run), unless the
        attempt's time is up or the agent is gone."""
        state = tracked.state
        agent_id = state.agent_id
        deadline = state.deadline()
        now = self.clock.now()
        if agent_id is None or state.current is None:
            state.phase = TaskPhase.PENDING
            self._enqueue(tracked)
            return
        self._on_agent.setdefault((state.namespace, agent_id), set()).add(state.key)
        if deadline is not None and deadline <= now:
            self._attempt_ended(
                tracked,
                AttemptOutcome.TIMED_OUT,
                f"agent {agent_id} did not finish within {state.timeout_seconds} s",
                release=False,
            )
            return
        record = self.registry.get(state.namespace, agent_id)
        if record is None and not gone:
            # After a restart the task watch may deliver before the agent watch: wait for
            # the agent (or for RECONCILE_GRACE) rather than fail over a task it is running.
            self._awaiting_agent.setdefault((state.namespace, agent_id), set()).add(state.key)
            self._timer(now + RECONCILE_GRACE, state.key, "reconcile")
            return
        health = self.tracker.get((state.namespace, agent_id))
        if record is None or (health is not None and health.health is HealthStatus.UNREACHABLE):
            self._attempt_ended(
                tracked,
                AttemptOutcome.UNREACHABLE,
                f"agent {agent_id} is gone or unreachable",
                release=False,
            )
            return
        self.router.assign(state.namespace, agent_id)
        if state.phase is TaskPhase.ASSIGNED:
            state.run(now)
            self._dirty(tracked)
        self._start_dispatch(tracked)

    # --- timers -------------------------------------------------------------------------

    def _timer(self, at: dt.datetime, key: str, kind: str) -> None:
        heapq.heappush(self._timers, (at, next(self._seq), key, kind))
        self._wake.set()

    def _fire(self, kind: str, key: str) -> None:
        if kind == "ttl":
            self._spawn(self._expire(key))
            return
        tracked = self._tasks.get(key)
        if tracked is None:
            return
        state = tracked.state
        if kind == "due" and state.phase is TaskPhase.PENDING:
            state.next_retry_at = None
            self._enqueue(tracked)
        elif kind == "reconcile" and state.phase in IN_FLIGHT_PHASES:
            waiting = self._awaiting_agent.get((state.namespace, state.agent_id or ""))
            if waiting is not None and key in waiting:
                waiting.discard(key)
                self._reconcile(tracked, gone=True)
        elif kind == "timeout" and state.phase in IN_FLIGHT_PHASES:
            deadline = state.deadline()
            if deadline is not None and deadline <= self.clock.now():
                self._attempt_ended(
                    tracked,
                    AttemptOutcome.TIMED_OUT,
                    f"agent {state.agent_id} did not report a result within "
                    f"{state.timeout_seconds} s",
                )

    def _schedule_ttl(self, state: TaskState, body: Mapping[str, Any]) -> None:
        ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None or state.completed_at is None or state.name is None:
            return
        self._expiring[state.key] = state
        self._timer(state.completed_at + dt.timedelta(seconds=int(ttl)), state.key, "ttl")

    async def _expire(self, key: str) -> None:
        state = self._expiring.pop(key, None)
        if state is None or self.writer is None:
            return
        await self.writer.delete(state)
        logger.info("deleted finished task %s (ttlSecondsAfterFinished)", state.ref)

    # --- status -------------------------------------------------------------------------

    def _dirty(self, tracked: _Tracked, *, urgent: bool = False) -> None:
        if not tracked.state.durable or self.writer is None:
            if tracked.state.finished:
                self._tasks.pop(tracked.state.key, None)  # the fast path keeps only waiters
            return
        tracked.dirty = True
        if urgent:
            tracked.urgent = True
            if tracked.hurry is not None:
                tracked.hurry.set()
        if not tracked.writing:
            tracked.writing = True
            self._spawn(self._flush(tracked))

    async def _flush(self, tracked: _Tracked) -> None:
        assert self.writer is not None
        state = tracked.state
        try:
            if not tracked.urgent:
                tracked.hurry = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(tracked.hurry.wait(), COALESCE_SECONDS)
                tracked.hurry = None
            while tracked.dirty:
                tracked.dirty = False
                tracked.urgent = False
                finished = state.finished
                attempt = state.attempt
                status = task_status(state, tracked.conditions, self.clock.now())
                try:
                    result, body = await self.writer.write(state, status, tracked.resource_version)
                except Exception:
                    logger.exception("writing the status of task %s failed; retrying", state.ref)
                    tracked.dirty = True
                    await asyncio.sleep(WRITE_RETRY_SECONDS)
                    continue
                if result == "gone":
                    self.forget(state.key)
                    return
                assert body is not None
                tracked.resource_version = (body.get("metadata") or {}).get("resourceVersion")
                if result == "conflict":
                    theirs = (body.get("status") or {}).get("phase")
                    if theirs in _FINAL_VALUES:  # a final phase is never written twice
                        if not finished:
                            logger.info("task %s was finished by another writer", state.ref)
                        self._retire(state.key)
                        return
                    tracked.conditions = list((body.get("status") or {}).get("conditions") or ())
                    tracked.dirty = True  # again, on the version just read
                    continue
                tracked.conditions = status["conditions"]
                tracked.persisted_attempt = attempt
                if tracked.written is not None:
                    tracked.written.set()
                if finished and not tracked.dirty:
                    self._retire(state.key)
                    self._ttl_after_finish(state)
        finally:
            tracked.writing = False

    def _retire(self, key: str) -> None:
        """Forget a finished task, keeping a tombstone: the watch may still deliver
        events older than its final write (the echo of its Running write), and those
        must not look like a task a previous operator left running."""
        self._tasks.pop(key, None)
        self._tombstones[key] = None
        if len(self._tombstones) > TOMBSTONES_MAX:
            self._tombstones.popitem(last=False)

    def _ttl_after_finish(self, state: TaskState) -> None:
        ttl = self._ttl_seconds.pop(state.key, None)
        if ttl is not None and state.completed_at is not None:
            self._expiring[state.key] = state
            self._timer(state.completed_at + dt.timedelta(seconds=ttl), state.key, "ttl")

    # --- plumbing -----------------------------------------------------------------------

    def _event(self, tracked: _Tracked, type_: str, reason: str, message: str) -> None:
        state = tracked.state
        if self.events is not None and state.name is not None:
            ref = ObjectRef("MeshTask", state.namespace, state.name, state.key)
            self.events.post(ref, type_, reason, message)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _gauge(self) -> None:
        """agentmesh_tasks{phase}, recounted at most once a second (it walks every task)."""
        if time.monotonic() - self._gauged < 1.0:
            return
        self._gauged = time.monotonic()
        counts = dict.fromkeys(TaskPhase, 0)
        for tracked in self._tasks.values():
            counts[tracked.state.phase] += 1
        for phase, count in counts.items():
            TASKS.labels(phase=phase.value).set(count)

    async def close(self) -> None:
        for tracked in self._tasks.values():
            if tracked.dispatch is not None:
                tracked.dispatch.cancel()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.transport.close()

    # --- for the mesh API's task routes (mesh/task_routes.py) ---------------------------

    def outcome(self, key: str) -> asyncio.Future[TaskState] | None:
        """A future resolved with the task's state when tracked task `key` ends, durable
        ones included (the fast path waits on durable tasks it created); None when `key`
        is not tracked (not seen yet, or finished and written)."""
        tracked = self._tasks.get(key)
        if tracked is None:
            return None
        if tracked.done is None:
            tracked.done = asyncio.get_running_loop().create_future()
            if tracked.state.finished:  # ended, its final status not yet written
                tracked.done.set_result(tracked.state)
        return tracked.done

    def report(
        self,
        key: str,
        namespace: str,
        agent_id: str,
        attempt: int,
        *,
        result: Any = None,
        error: str | None = None,
    ) -> TaskState:
        """An agent's later answer to a dispatch it accepted with 202: `result`, or
        `error` (the attempt failed; the retry policy decides what is next). Only the
        agent the current attempt is assigned to may answer, and only for that attempt:
        NotFoundError, ForbiddenError (NotYourTask) or ConflictError (StaleAttempt)."""
        from agent_mesh.domain.errors import ConflictError, ForbiddenError, NotFoundError

        tracked = self._tasks.get(key)
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
        if tracked.dispatch is not None:  # the answer overtook the dispatch call's own
            tracked.dispatch.cancel()
            tracked.dispatch = None
        if error is not None:
            self._attempt_ended(
                tracked, AttemptOutcome.FAILED, f"agent {agent_id} failed the task: {error}"
            )
        else:
            self.accept_result(tracked, result)
        return state


_FINAL_VALUES: Final = frozenset(
    p.value for p in (TaskPhase.COMPLETED, TaskPhase.FAILED, TaskPhase.TIMED_OUT)
)


def _payload_error(payload: Any) -> str | None:
    try:
        return payload_size_error(payload)
    except TypeError as error:
        return f"spec.payload is not JSON: {error}"
