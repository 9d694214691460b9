"""Agent health from heartbeats, and when to write it to status.

`lastSeen` lives here, in memory; status is written on every health transition and
otherwise at most once per agent per write interval (the kubelet-lease lesson: heartbeats
must not become apiserver writes). Pure and clock-driven, so every threshold is testable
without sleeping.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

AgentKey = tuple[str, str]
"""(namespace, agentId)."""


class HealthStatus(StrEnum):
    """Health derived from heartbeats (DESIGN §3)."""

    PENDING = "pending"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """Thresholds and the status-write budget (operator settings)."""

    degraded_after: dt.timedelta = dt.timedelta(seconds=60)
    unreachable_after: dt.timedelta = dt.timedelta(seconds=300)
    write_interval: dt.timedelta = dt.timedelta(seconds=30)

    def __post_init__(self) -> None:
        if not dt.timedelta(0) < self.degraded_after < self.unreachable_after:
            raise ValueError(
                "health thresholds must satisfy 0 < degraded_after < unreachable_after "
                f"(got {self.degraded_after}, {self.unreachable_after})"
            )

    def classify(self, last_seen: dt.datetime | None, now: dt.datetime) -> HealthStatus:
        if last_seen is None:
            return HealthStatus.PENDING
        age = now - last_seen
        if age < self.degraded_after:
            return HealthStatus.HEALTHY
        if age <= self.unreachable_after:
            return HealthStatus.DEGRADED
        return HealthStatus.UNREACHABLE


@dataclass(frozen=True, slots=True)
class Transition:
    """An agent's health changed."""

    key: AgentKey
    previous: HealthStatus
    current: HealthStatus
    last_seen: dt.datetime | None
    at: dt.datetime


@dataclass(slots=True)
class AgentHealth:
    """What the operator knows of one agent between status writes."""

    health: HealthStatus = HealthStatus.PENDING
    last_seen: dt.datetime | None = None
    active_tasks: int = 0
    version: str | None = None
    endpoint: str | None = None
    written_health: HealthStatus | None = None
    written_last_seen: dt.datetime | None = None
    written_active_tasks: int | None = None
    written_at: dt.datetime | None = None
    written_endpoint: str | None = None
    # task analytics (the coordinator reports each finished attempt)
    completed_tasks: int = 0
    failed_tasks: int = 0
    execution_ms_total: float = 0.0
    written_completed: int = 0
    written_failed: int = 0

    @property
    def avg_execution_ms(self) -> float | None:
        if not self.completed_tasks:
            return None
        return round(self.execution_ms_total / self.completed_tasks, 1)


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """The status fields one agent needs written now."""

    key: AgentKey
    health: HealthStatus
    last_seen: dt.datetime | None
    active_tasks: int
    endpoint: str | None
    transition: bool
    completed_tasks: int = 0
    failed_tasks: int = 0
    avg_execution_ms: float | None = None


@dataclass
class HealthTracker:
    """Heartbeats in, transitions and coalesced status writes out."""

    policy: HealthPolicy = field(default_factory=HealthPolicy)
    agents: dict[AgentKey, AgentHealth] = field(default_factory=dict)
    beats: int = 0

    def load(
        self,
        key: AgentKey,
        last_seen: dt.datetime | None,
        health: HealthStatus | None,
        active_tasks: int = 0,
        endpoint: str | None = None,
        completed_tasks: int = 0,
        failed_tasks: int = 0,
        avg_execution_ms: float | None = None,
    ) -> None:
        """Seed an agent from its status (operator start, or first sight of it)."""
        if key in self.agents:
            return
        state = AgentHealth(
            health=health or HealthStatus.PENDING,
            last_seen=last_seen,
            active_tasks=active_tasks,
            endpoint=endpoint,
            # registration writes `pending` itself: no health write until something happens
            written_health=health or HealthStatus.PENDING,
            written_last_seen=last_seen,
            written_active_tasks=active_tasks,
            written_endpoint=endpoint,
            completed_tasks=completed_tasks,
            failed_tasks=failed_tasks,
            execution_ms_total=(avg_execution_ms or 0.0) * completed_tasks,
            written_completed=completed_tasks,
            written_failed=failed_tasks,
        )
        self.agents[key] = state

    def forget(self, key: AgentKey) -> None:
        self.agents.pop(key, None)

    def get(self, key: AgentKey) -> AgentHealth | None:
        return self.agents.get(key)

    def beat(
        self,
        key: AgentKey,
        now: dt.datetime,
        active_tasks: int,
        version: str | None = None,
        endpoint: str | None = None,
    ) -> Transition | None:
        """Record a heartbeat; the transition to healthy when there is one."""
        state = self.agents.get(key)
        if state is None:
            state = self.agents[key] = AgentHealth()
        self.beats += 1
        state.last_seen = now
        state.active_tasks = active_tasks
        if version is not None:
            state.version = version
        if endpoint is not None:
            state.endpoint = endpoint
        if state.health is HealthStatus.HEALTHY:
            return None
        previous, state.health = state.health, HealthStatus.HEALTHY
        return Transition(key, previous, HealthStatus.HEALTHY, now, now)

    def task_finished(self, key: AgentKey, succeeded: bool, duration_ms: float) -> None:
        """An attempt on the agent ended: completed (its duration counts toward the
        average) or failed/timed out. Written with the next coalesced status write."""
        state = self.agents.get(key)
        if state is None:
            return
        if succeeded:
            state.completed_tasks += 1
            state.execution_ms_total += max(0.0, duration_ms)
        else:
            state.failed_tasks += 1

    def sweep(self, now: dt.datetime) -> list[Transition]:
        """Re-classify every agent (a timer calls this); heartbeats only ever heal."""
        transitions = []
        for key, state in self.agents.items():
            if state.last_seen is None:
                continue
            current = self.policy.classify(state.last_seen, now)
            if current is not state.health:
                transitions.append(Transition(key, state.health, current, state.last_seen, now))
                state.health = current
        return transitions

    def due(self, now: dt.datetime, keys: Iterable[AgentKey] | None = None) -> list[StatusWrite]:
        """Agents whose status must be written now: a health change at once; otherwise
        newer lastSeen, activeTasks, endpoint or task counts at most once per write
        interval."""
        writes = []
        for key in keys if keys is not None else self.agents:
            state = self.agents.get(key)
            if state is None:
                continue
            transition = state.health is not state.written_health
            stale = (
                state.last_seen != state.written_last_seen
                or state.active_tasks != state.written_active_tasks
                or state.endpoint != state.written_endpoint
                or state.completed_tasks != state.written_completed
                or state.failed_tasks != state.written_failed
            )
            interval_over = (
                state.written_at is None or now - state.written_at >= self.policy.write_interval
            )
            if transition or (stale and interval_over):
                writes.append(
                    StatusWrite(
                        key,
                        state.health,
                        state.last_seen,
                        state.active_tasks,
                        state.endpoint,
                        transition,
                        state.completed_tasks,
                        state.failed_tasks,
                        state.avg_execution_ms,
                    )
                )
        return writes

    def written(self, write: StatusWrite, now: dt.datetime) -> None:
        """The write went through: it is the new baseline for `due`."""
        state = self.agents.get(write.key)
        if state is None:
            return
        state.written_health = write.health
        state.written_last_seen = write.last_seen
        state.written_active_tasks = write.active_tasks
        state.written_endpoint = write.endpoint
        state.written_completed = write.completed_tasks
        state.written_failed = write.failed_tasks
        state.written_at = now

    def counts(self) -> dict[HealthStatus, int]:
        out = dict.fromkeys(HealthStatus, 0)
        for state in self.agents.values():
            out[state.health] += 1
        return out
