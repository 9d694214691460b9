"""The operator's health loop: heartbeats in, health transitions out (log, Event, status,
`agent.health` to whoever listens), and coalesced status writes.

Listeners are the seam for broadcasting `agent.health` to monitor agents once the
transport exists; until then the event goes to the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.clock import Clock, rfc3339
from agent_mesh.domain.health import HealthStatus, HealthTracker, Transition
from agent_mesh.kube.agent_status import AgentStatusWriter, status_patch
from agent_mesh.kube.events import EventPoster, ObjectRef
from agent_mesh.observability.metrics import AGENTS, HEARTBEATS, STATUS_WRITES

logger = logging.getLogger("agent_mesh.health")
_ACCEPTED = HEARTBEATS.labels(result="accepted")
HealthListener = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]

_EVENT_TYPE = {
    HealthStatus.HEALTHY: "Normal",
    HealthStatus.PENDING: "Normal",
    HealthStatus.DEGRADED: "Warning",
    HealthStatus.UNREACHABLE: "Warning",
}


class HealthMonitor:
    """Owns the tracker; the mesh API feeds it beats, a loop sweeps and writes.
    Without a writer and an Event poster (benchmarks, HTTP tests) it only tracks."""

    def __init__(
        self,
        tracker: HealthTracker,
        registry: AgentRegistry,
        writer: AgentStatusWriter | None,
        events: EventPoster | None,
        clock: Clock,
        sweep_seconds: float = 10.0,
        flush_seconds: float = 1.0,
    ) -> None:
        self.tracker = tracker
        self.registry = registry
        self.writer = writer
        self.events = events
        self.clock = clock
        self.sweep_seconds = sweep_seconds
        self.flush_seconds = min(flush_seconds, sweep_seconds)
        self.listeners: list[HealthListener] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # --- input ---------------------------------------------------------------------------

    def beat(
        self, record: AgentRecord, active_tasks: int, version: str | None, endpoint: str | None
    ) -> None:
        transition = self.tracker.beat(
            (record.namespace, record.agent_id), self.clock.now(), active_tasks, version, endpoint
        )
        _ACCEPTED.inc()
        if transition is not None:
            self._transitioned(transition)

    def seen(self, record: AgentRecord) -> None:
        """A MeshAgent appeared (or the operator started): seed health from its status."""
        self.tracker.load(
            (record.namespace, record.agent_id),
            record.last_seen,
            record.health,
            record.active_tasks,
            record.status_endpoint,
            record.completed_tasks,
            record.failed_tasks,
            record.avg_execution_ms,
        )

    def gone(self, record: AgentRecord) -> None:
        self.tracker.forget((record.namespace, record.agent_id))

    # --- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        elapsed = 0.0
        while True:
            await asyncio.sleep(self.flush_seconds)
            elapsed += self.flush_seconds
            try:
                if elapsed >= self.sweep_seconds:
                    elapsed = 0.0
                    for transition in self.tracker.sweep(self.clock.now()):
                        self._transitioned(transition)
                await self.flush()
            except Exception:  # the next tick retries; never let the loop die
                logger.exception("health sweep failed")

    async def flush(self) -> int:
        """Write every due status; returns how many were written."""
        now = self.clock.now()
        items = []
        writes = []
        for write in self.tracker.due(now):
            record = self.registry.get(*write.key)
            if record is None:
                continue
            items.append((record, status_patch(record, write, now)))
            writes.append(write)
        if not items or self.writer is None:
            self._gauge()
            return 0
        results = await self.writer.write_all(items)
        done = 0
        for write, result in zip(writes, results, strict=True):
            if result is True:
                self.tracker.written(write, now)
                done += 1
            elif isinstance(result, BaseException):
                logger.warning("status write for %s/%s failed: %s", *write.key, result)
        STATUS_WRITES.inc(done)
        self._gauge()
        return done

    def _gauge(self) -> None:
        for health, count in self.tracker.counts().items():
            AGENTS.labels(health=health.value).set(count)

    # --- transitions ---------------------------------------------------------------------

    def _transitioned(self, transition: Transition) -> None:
        namespace, agent_id = transition.key
        record = self.registry.get(namespace, agent_id)
        message = (
            f"agent {namespace}/{agent_id} is {transition.current.value} "
            f"(was {transition.previous.value}; last seen "
            f"{rfc3339(transition.last_seen) if transition.last_seen else 'never'})"
        )
        logger.info(
            message,
            extra={
                "agentId": agent_id,
                "namespace": namespace,
                "event": "agent.health",
            },
        )
        if record is not None and self.events is not None:
            self.events.post(
                ObjectRef("MeshAgent", namespace, record.name, record.uid),
                _EVENT_TYPE[transition.current],
                f"Agent{transition.current.value.capitalize()}",
                message,
            )
        event = {
            "type": "agent.health",
            "namespace": namespace,
            "agentId": agent_id,
            "health": transition.current.value,
            "previous": transition.previous.value,
            "lastSeen": rfc3339(transition.last_seen) if transition.last_seen else None,
            "at": rfc3339(transition.at),
        }
        for listener in self.listeners:
            task = asyncio.get_running_loop().create_task(listener(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
