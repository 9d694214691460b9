"""The coordinator (DESIGN §4): takes tasks (MeshTasks from the watch, fast-path tasks from
the mesh API), queues them by priority, routes each to a capable agent, dispatches it, and
turns every outcome into the next step; the API the controllers, the mesh API, the
runtime and the health listeners use, over the parts built in `wiring`. One loop (`run`)
fires timers and places tasks; each dispatched attempt is its own asyncio task."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Mapping
from typing import Any

from agent_mesh.auth.audit import AuditLog
from agent_mesh.auth.authority import Authority
from agent_mesh.coordinator.dispatch import AgentTransport
from agent_mesh.coordinator.notifier import EventSink
from agent_mesh.coordinator.reconcile import RECONCILE_GRACE
from agent_mesh.coordinator.status_sync import COALESCE_SECONDS, WRITE_RETRY_SECONDS, TaskWriter
from agent_mesh.coordinator.wiring import Parts, default_transport
from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.clock import Clock
from agent_mesh.domain.health import HealthStatus, HealthTracker
from agent_mesh.domain.retry import RetryPolicy
from agent_mesh.domain.routing import Router
from agent_mesh.domain.tasks import IN_FLIGHT_PHASES, TaskPhase, TaskState, task_from_body


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
        events: EventSink | None = None,
        router: Router | None = None,
        policy: RetryPolicy | None = None,
        transport: AgentTransport | None = None,
        result_max_bytes: int = 262144,
        coalesce_seconds: float = COALESCE_SECONDS,
        write_retry_seconds: float = WRITE_RETRY_SECONDS,
        reconcile_grace: dt.timedelta = RECONCILE_GRACE,
    ) -> None:
        self.registry, self.tracker, self.clock = registry, tracker, clock
        self.authority, self.audit = authority, audit
        self.router = router if router is not None else Router()
        self.transport = transport if transport is not None else default_transport()
        self._parts = parts = Parts(
            registry=registry,
            tracker=tracker,
            authority=authority,
            audit=audit,
            clock=clock,
            writer=writer,
            events=events,
            router=self.router,
            policy=policy if policy is not None else RetryPolicy(),
            transport=self.transport,
            result_max_bytes=result_max_bytes,
            coalesce_seconds=coalesce_seconds,
            write_retry_seconds=write_retry_seconds,
            reconcile_grace=reconcile_grace,
        )
        self._book, self._lifecycle = parts.book, parts.lifecycle

    # --- agents -------------------------------------------------------------------------

    def agent_seen(self, record: AgentRecord) -> None:
        """A MeshAgent was added or changed (the registry accepted it)."""
        self.router.upsert(record)
        health = self.tracker.get((record.namespace, record.agent_id))
        if health is not None:
            self.router.set_health(record.namespace, record.agent_id, health.health)
        self._parts.reconciler.agent_seen(record.namespace, record.agent_id)
        self._parts.wake.set()

    def agent_gone(self, namespace: str, agent_id: str) -> None:
        self.router.remove(namespace, agent_id)
        self._lifecycle.fail_over(namespace, agent_id, f"agent {namespace}/{agent_id} was deleted")

    async def health_changed(self, event: Mapping[str, Any]) -> None:
        """A HealthMonitor listener: degraded agents get no new work; unreachable ones
        lose their running tasks to others, using no retry."""
        namespace, agent_id = str(event["namespace"]), str(event["agentId"])
        health = HealthStatus(str(event["health"]))
        self.router.set_health(namespace, agent_id, health)
        if health is HealthStatus.UNREACHABLE:
            self._lifecycle.fail_over(namespace, agent_id, f"agent {agent_id} became unreachable")
        self._parts.wake.set()

    # --- tasks in -----------------------------------------------------------------------

    def observe(self, body: Mapping[str, Any]) -> None:
        """A MeshTask from the watch: new ones are taken on (including, after a restart,
        those a previous operator left in flight); known ones are ours already."""
        meta = body.get("metadata") or {}
        key = str(meta.get("uid") or "")
        if not key or self._book.known(key) or meta.get("deletionTimestamp"):
            return
        state = task_from_body(body)
        status = body.get("status") or {}
        ttl = (body.get("spec") or {}).get("ttlSecondsAfterFinished")
        if state.finished:
            self._parts.expiry.finished_seen(state, ttl)
            return
        tracked = self._book.track(state, meta.get("resourceVersion"), status.get("conditions"))
        self._parts.expiry.remember(key, ttl)
        if self._lifecycle.refuse_oversized(tracked):
            return
        if state.phase in IN_FLIGHT_PHASES:
            self._parts.reconciler.reconcile(tracked)
            return
        state.phase = TaskPhase.PENDING
        if not status.get("phase"):
            self._parts.status.dirty(tracked)  # a new task shows Pending (unless routed at once)
        self._parts.queues.enqueue(tracked)

    def forget(self, key: str) -> None:
        """The MeshTask was deleted: drop it, wherever it is."""
        self._parts.forget(key)

    async def submit(self, state: TaskState) -> asyncio.Future[TaskState]:
        """A fast-path task: queued like any other; the future resolves when it ends."""
        tracked = self._book.track(state)
        tracked.done = asyncio.get_running_loop().create_future()
        self._parts.queues.enqueue(tracked)
        return tracked.done

    def get(self, key: str) -> TaskState | None:
        tracked = self._book.get(key)
        return tracked.state if tracked is not None else None

    # --- the scheduler loop -------------------------------------------------------------

    async def run(self) -> None:
        while True:
            self._parts.wake.clear()
            wait = self.schedule()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._parts.wake.wait(), timeout=wait)

    def schedule(self) -> float | None:
        """Fire due timers, then place tasks, highest priority and oldest first, until
        every kind of waiting task is blocked; the seconds until the next timer."""
        now = self.clock.now()
        self._parts.timers.fire_due(now)
        self._parts.scheduler.place_all(now)
        self._parts.notifier.gauge(self._book)
        return self._parts.timers.seconds_until_next(self.clock.now())

    async def close(self) -> None:
        for tracked in self._book:
            tracked.stop_dispatch()
        await self._parts.background.close()
        await self.transport.close()

    # --- for the mesh API's task routes (mesh/task_routes.py) ---------------------------

    def outcome(self, key: str) -> asyncio.Future[TaskState] | None:
        """A future resolved with the task's state when tracked task `key` ends, durable
        ones included (the fast path waits on durable tasks it created); None when `key`
        is not tracked (not seen yet, or finished and written)."""
        tracked = self._book.get(key)
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
        return self._lifecycle.report(key, namespace, agent_id, attempt, result, error)
