"""The operator's health loop: heartbeats in, health transitions out (log, Event, status,
`agent.health` to whoever listens), and coalesced status writes.

Listeners are the seam for broadcasting `agent.health` to monitor agents once the
transport exists; until then the event goes to the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final, Protocol

from agent_mesh.api.meshagent_status import health_patch
from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.background import Background
from agent_mesh.domain.clock import Clock, rfc3339
from agent_mesh.domain.health import (
    AgentKey,
    HealthStatus,
    HealthTracker,
    StatusWrite,
    Transition,
)
from agent_mesh.kube.agent_status import WriteResult
from agent_mesh.kube.events import EventPoster, ObjectRef
from agent_mesh.observability.metrics import AGENTS, HEARTBEATS, STATUS_WRITES

logger = logging.getLogger("agent_mesh.health")
_ACCEPTED = HEARTBEATS.labels(result="accepted")
HealthListener = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]
WRITE_ATTEMPTS: Final = 3
"""Writes of one status per flush: a conflict is written again at once from the version
the apiserver has, and what still conflicts waits for the next flush."""


class StatusWriter(Protocol):
    """Writes one MeshAgent's status (kube.agent_status.AgentStatusWriter in the operator)."""

    async def write(
        self, record: AgentRecord, patch: Mapping[str, Any]
    ) -> tuple[WriteResult, AgentRecord | None]:
        """WRITTEN with the patched object, CONFLICT with the object as it is now when
        `record.resource_version` is stale, GONE when the MeshAgent was deleted."""
        ...


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
        writer: StatusWriter | None,
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
        self._listening = Background()
        # The newest version of an agent this loop knows (its own write's answer, or the
        # object read on a conflict), valid while the registry still holds the record it
        # was adopted over: the watch delivers the same version later, or a newer one.
        self._adopted: dict[AgentKey, tuple[AgentRecord, AgentRecord]] = {}

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
        self._adopted.pop((record.namespace, record.agent_id), None)

    # --- the loop ------------------------------------------------------------------------

    async def close(self) -> None:
        """Cancel the listeners still running (on shutdown)."""
        await self._listening.close()

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
        pending: list[tuple[StatusWrite, AgentRecord, AgentRecord]] = []
        for write in self.tracker.due(now):
            base = self.registry.get(*write.key)
            if base is not None:
                pending.append((write, base, self._latest(write.key, base)))
        if not pending or self.writer is None:
            self._gauge()
            return 0
        done = 0
        for _ in range(WRITE_ATTEMPTS):
            results = await asyncio.gather(
                *(
                    self.writer.write(record, health_patch(record, write, now))
                    for write, _, record in pending
                ),
                return_exceptions=True,
            )
            conflicts = []
            for (write, base, _), result in zip(pending, results, strict=True):
                if isinstance(result, BaseException):
                    logger.warning("status write for %s/%s failed: %s", *write.key, result)
                    continue
                outcome, current = result
                if outcome is WriteResult.GONE:
                    # deleted: not written again (the watch's DELETED does the rest)
                    self.tracker.forget(write.key)
                    self._adopted.pop(write.key, None)
                    continue
                if current is not None and current.uid == base.uid:
                    self._adopted[write.key] = (base, current)
                if outcome is WriteResult.WRITTEN:
                    self.tracker.written(write, now)
                    done += 1
                elif current is not None and current.uid == base.uid:
                    conflicts.append((write, base, current))
            pending = conflicts
            if not pending:
                break
        STATUS_WRITES.inc(done)
        self._gauge()
        return done

    def _latest(self, key: AgentKey, base: AgentRecord) -> AgentRecord:
        adopted = self._adopted.get(key)
        if adopted is None:
            return base
        if adopted[0] is not base:  # the watch delivered a version since: it wins
            del self._adopted[key]
            return base
        return adopted[1]

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
            self._listening.spawn(listener(event))
