"""Capability-based discovery: which agents in a namespace match a query, from the
registry's indexes and the health tracker, never by scanning every agent."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.egress import EgressClass
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
    endpoint_class: EgressClass = EgressClass.DECLARED
    """Who chose the endpoint: what the egress policy checks before dialling it."""


def discover(
    registry: AgentRegistry,
    tracker: HealthTracker,
    query: AgentQuery,
    limit: int | None = None,
) -> list[AgentView]:
    """Matching agents ordered by agentId; with `limit`, at most limit + 1 of them (the
    extra one tells the caller the answer was truncated), found without sorting them all."""
    out: list[AgentView] = []
    ids = registry.candidate_ids(query.namespace, query.capabilities, query.agent_type)
    for agent_id in ids if limit is not None else sorted(ids):
        if limit is not None and len(out) > limit:
            break
        record = registry.get(query.namespace, agent_id)
        if record is None:
            continue
        view = view_of(record, tracker)
        if query.health is not None and view.health is not query.health:
            continue
        out.append(view)
    if limit is not None:
        out.sort(key=lambda view: view.record.agent_id)
    return out


def view_of(record: AgentRecord, tracker: HealthTracker) -> AgentView:
    """The agent with its live health, load and endpoint (heartbeats win over status)."""
    state = tracker.get((record.namespace, record.agent_id))
    reported = state.endpoint if state else None
    return AgentView(
        record,
        state.health if state else (record.health or HealthStatus.PENDING),
        state.last_seen if state else record.last_seen,
        state.active_tasks if state else record.active_tasks,
        resolve_endpoint(record, reported),
        endpoint_class(record, reported),
    )


def resolve_endpoint(record: AgentRecord, reported: str | None) -> str | None:
    """Where the mesh reaches the agent: spec.endpoint (external agents), the MagicDNS
    name of a managed agent connected to the tailnet, the Service of an operator-run
    workload (direct, or its sidecar down), else what the agent reported in heartbeats."""
    if record.endpoint:
        return record.endpoint
    if record.tailnet_endpoint:
        return record.tailnet_endpoint
    if record.workload:
        return f"http://{record.name}.{record.namespace}.svc:{record.port}"
    return reported or record.status_endpoint


def endpoint_class(record: AgentRecord, reported: str | None) -> EgressClass:
    """The egress class of `resolve_endpoint`'s answer: spec.endpoint and status.endpoint
    are written by people with RBAC on MeshAgents (DECLARED); the workload's Service, and
    a heartbeat's endpoint (kept only when it is the agent's own pod IP), are the
    operator's own (DERIVED)."""
    if record.endpoint:
        return EgressClass.DECLARED
    if record.workload or record.tailnet_endpoint or reported:
        return EgressClass.DERIVED
    return EgressClass.DECLARED
