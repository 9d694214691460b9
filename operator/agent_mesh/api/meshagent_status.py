"""MeshAgent status, built: pure functions from what the operator knows (the old status,
a health write, an egress verdict) to the merge patch to send, empty when nothing would
change (no write). `kube/agent_status.py` sends them; kopf handlers return them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Final

from agent_mesh.api.meshagent import HealthStatus, MeshAgentCondition, MeshAgentReason
from agent_mesh.domain.agents import AgentRecord
from agent_mesh.domain.clock import rfc3339
from agent_mesh.domain.conditions import ConditionSet, get_condition
from agent_mesh.domain.discovery import resolve_endpoint
from agent_mesh.domain.health import StatusWrite

_READY: Final[Mapping[HealthStatus, tuple[str, MeshAgentReason, str]]] = {
    HealthStatus.PENDING: (
        "False",
        MeshAgentReason.AWAITING_HEARTBEAT,
        "Waiting for the agent's first heartbeat.",
    ),
    HealthStatus.HEALTHY: ("True", MeshAgentReason.AGENT_HEALTHY, "Heartbeats arrive on time."),
    HealthStatus.DEGRADED: (
        "False",
        MeshAgentReason.AGENT_DEGRADED,
        "Heartbeats are late; the agent gets no new tasks.",
    ),
    HealthStatus.UNREACHABLE: (
        "False",
        MeshAgentReason.AGENT_UNREACHABLE,
        "No heartbeat for too long; its running tasks fail over.",
    ),
}


def health_patch(record: AgentRecord, write: StatusWrite, now: dt.datetime) -> dict[str, Any]:
    """The status fields for `write`; Ready follows health."""
    patch: dict[str, Any] = {
        "healthStatus": write.health.value,
        "activeTasks": write.active_tasks,
    }
    if write.last_seen is not None:
        patch["lastSeen"] = rfc3339(write.last_seen)
    if write.completed_tasks or write.failed_tasks:
        patch["completedTasks"] = write.completed_tasks
        patch["failedTasks"] = write.failed_tasks
        if write.avg_execution_ms is not None:
            patch["avgExecutionMs"] = write.avg_execution_ms
    endpoint = resolve_endpoint(record, write.endpoint)
    if endpoint is not None:
        patch["endpoint"] = endpoint
    conditions = ConditionSet(record.conditions, generation=record.generation, now=now)
    conditions.set(MeshAgentCondition.READY, *_READY[write.health])
    patch.update(conditions.patch())
    return patch


def registration_patch(
    status: Mapping[str, Any], generation: int | None, now: dt.datetime
) -> dict[str, Any]:
    """The status fields to change (empty when nothing would change: no write)."""
    patch: dict[str, Any] = {}
    health = status.get("healthStatus") or HealthStatus.PENDING.value
    if status.get("healthStatus") != health:
        patch["healthStatus"] = health
    if not status.get("registeredAt"):
        patch["registeredAt"] = rfc3339(now)
    conditions = ConditionSet(status.get("conditions") or [], generation=generation, now=now)
    conditions.set(
        MeshAgentCondition.REGISTERED,
        "True",
        MeshAgentReason.AGENT_REGISTERED,
        "The agent is registered with the mesh.",
    )
    if health == HealthStatus.PENDING.value:
        conditions.set(MeshAgentCondition.READY, *_READY[HealthStatus.PENDING])
    patch.update(conditions.patch(status))
    return patch


def credential_conditions(
    conditions: list[dict[str, Any]],
    problem: str | None,
    generation: int | None,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """External agents: CredentialIssued True, or False naming why the Secret was refused."""
    issued = ConditionSet(conditions, generation=generation, now=now)
    issued.set_check(
        MeshAgentCondition.CREDENTIAL_ISSUED,
        problem,
        (
            MeshAgentReason.CREDENTIAL_SECRET_READY,
            "The agent's credential Secret is ready; its hash is in status.credential.",
        ),
        MeshAgentReason.CREDENTIAL_SECRET_NOT_OWNED,
    )
    return issued.items


def endpoint_patch(
    status: Mapping[str, Any],
    patch: dict[str, Any],
    refusal: str | None,
    generation: int | None,
    now: dt.datetime,
) -> None:
    """Add the EndpointAllowed condition (for an agent with spec.endpoint) to `patch`:
    False with the egress policy's reason when `refusal` says why the operator will not
    dial it, True otherwise. Nothing when it would not change."""
    old = list(patch.get("conditions") or status.get("conditions") or [])
    conditions = ConditionSet(old, generation=generation, now=now)
    conditions.set_check(
        MeshAgentCondition.ENDPOINT_ALLOWED,
        refusal,
        (MeshAgentReason.ENDPOINT_ADMITTED, "spec.endpoint passes the operator's egress policy."),
        MeshAgentReason.ENDPOINT_REFUSED,
    )
    patch.update(conditions.patch())


def tailnet_conditions(
    conditions: list[dict[str, Any]],
    *,
    tailscale: bool,
    managed: bool,
    configured: bool,
    problem: str | None,
    generation: int | None,
    now: dt.datetime,
    observed: tuple[bool, str, str] | None = None,
) -> list[dict[str, Any]]:
    """TailnetConnected for an agent whose network is tailscale: for a managed or an
    injected agent, what the operator `observed` of its sidecar and device (connected,
    reason, message); False, saying why, otherwise. An agent that left the tailnet gets
    TailnetNotUsed; others get no condition at all."""
    if not tailscale:
        if get_condition(conditions, MeshAgentCondition.TAILNET_CONNECTED.value) is None:
            return conditions
        reason = MeshAgentReason.TAILNET_NOT_USED
        message = "spec.network is direct: the agent is not on the tailnet."
    elif problem is not None:
        reason, message = MeshAgentReason.WORKLOAD_REFUSED, problem
    elif not configured:
        reason = MeshAgentReason.TAILNET_NOT_CONFIGURED
        message = (
            "spec.network is tailscale, but the operator has no Tailscale configuration "
            "(AGENT_MESH_TAILSCALE_TAILNET_DOMAIN): no sidecar is added and the agent is "
            "not on the tailnet."
        )
    elif observed is not None:
        connected, why, said = observed
        judged = ConditionSet(conditions, generation=generation, now=now)
        judged.set(
            MeshAgentCondition.TAILNET_CONNECTED, "True" if connected else "False", why, said
        )
        return judged.items
    elif managed:
        reason = MeshAgentReason.SIDECAR_NOT_READY
        message = (
            "The agent's pod has the tailscale sidecar; the operator has not read its state "
            "yet. The mesh reaches the agent through its Service meanwhile."
        )
    else:
        reason = MeshAgentReason.SIDECAR_NOT_INJECTED
        message = (
            "spec.network is tailscale and the operator runs no pod of this agent (no "
            "spec.workload): the sidecar is injected into your pod labelled "
            "agentmesh.io/agent=<MeshAgent name> that runs as spec.serviceAccountName, "
            "which this agent does not set yet (or the operator has not read the pod yet)."
        )
    updated = ConditionSet(conditions, generation=generation, now=now)
    updated.set(MeshAgentCondition.TAILNET_CONNECTED, "False", reason, message)
    return updated.items
