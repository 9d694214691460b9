"""Capability-based discovery: which agents in a namespace match a query, from the
registry's indexes and the health tracker, never by scanning every agent."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.health import HealthStatus, HealthTracker


@dataclass(frozen=True, slots=True)
class AgentQuery:
    """All of `capabilities`, and type / health when given, in one namespace."""

    namespace: str
    capabilities: tuple[str, ...] = ()
    agent_type: str | None = None
    health: HealthStatus | None = None


@dataclass(frozen=True, slots=True)
class AgentView:
    """An agent as discovery reports it."""

    record: AgentRecord
    health: HealthStatus
    last_seen: dt.datetime | None
    active_tasks: int
    endpoint: str | None


def discover(registry: AgentRegistry, tracker: HealthTracker, query: AgentQuery) -> list[AgentView]:
    """Matching agents, ordered by agentId."""
    out = []
    for record in registry.candidates(query.namespace, query.capabilities, query.agent_type):
        state = tracker.get((record.namespace, record.agent_id))
        health = state.health if state else (record.health or HealthStatus.PENDING)
        if query.health is not None and health is not query.health:
            continue
        out.append(
            AgentView(
                record,
                health,
                state.last_seen if state else record.last_seen,
                state.active_tasks if state else record.active_tasks,
                resolve_endpoint(record, state.endpoint if state else None),
            )
        )
    return out


def resolve_endpoint(record: AgentRecord, reported: str | None) -> str | None:
    """Where the mesh reaches the agent in direct mode: spec.endpoint (external agents),
    the Service of an operator-run workload, else what the agent reported in heartbeats."""
    if record.endpoint:
        return record.endpoint
    if record.workload:
        return f"http://{record.name}.{record.namespace}.svc:{record.port}"
    return reported or record.status_endpoint
