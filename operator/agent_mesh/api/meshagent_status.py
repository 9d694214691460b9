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
from agent_mesh.domain.conditions import set_condition
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
    current = [dict(c) for c in record.conditions]
    conditions = _ready(current, write.health, record.generation, now)
    if conditions != current:
        patch["conditions"] = conditions
    return patch


def _ready(
    conditions: list[dict[str, Any]], health: HealthStatus, generation: int | None, now: dt.datetime
) -> list[dict[str, Any]]:
    """Ready follows health."""
    status, reason, message = _READY[health]
    return set_condition(
        conditions,
        MeshAgentCondition.READY.value,
        status,
        reason.value,
        message,
        generation=generation,
        now=now,
    )


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
    old = list(status.get("conditions") or [])
    conditions = set_condition(
        old,
        MeshAgentCondition.REGISTERED.value,
        "True",
        MeshAgentReason.AGENT_REGISTERED.value,
        "The agent is registered with the mesh.",
        generation=generation,
        now=now,
    )
    if health == HealthStatus.PENDING.value:
        conditions = _ready(conditions, HealthStatus.PENDING, generation, now)
    if conditions != old:
        patch["conditions"] = conditions
    if generation is not None and status.get("observedGeneration") != generation:
        patch["observedGeneration"] = generation
    return patch


def credential_conditions(
    conditions: list[dict[str, Any]],
    problem: str | None,
    generation: int | None,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """External agents: CredentialIssued True, or False naming why the Secret was refused."""
    if problem is None:
        return set_condition(
            conditions,
            MeshAgentCondition.CREDENTIAL_ISSUED.value,
            "True",
            MeshAgentReason.CREDENTIAL_SECRET_READY.value,
            "The agent's credential Secret is ready; its hash is in status.credential.",
            generation=generation,
            now=now,
        )
    return set_condition(
        conditions,
        MeshAgentCondition.CREDENTIAL_ISSUED.value,
        "False",
        MeshAgentReason.CREDENTIAL_SECRET_NOT_OWNED.value,
        problem,
        generation=generation,
        now=now,
    )


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
    if refusal is None:
        state, reason = "True", MeshAgentReason.ENDPOINT_ADMITTED
        message = "spec.endpoint passes the operator's egress policy."
    else:
        state, reason, message = "False", MeshAgentReason.ENDPOINT_REFUSED, refusal
    conditions = set_condition(
        old,
        MeshAgentCondition.ENDPOINT_ALLOWED.value,
        state,
        reason.value,
        message,
        generation=generation,
        now=now,
    )
    if conditions != old:
        patch["conditions"] = conditions


def tailnet_conditions(
    conditions: list[dict[str, Any]],
    *,
    tailscale: bool,
    managed: bool,
    configured: bool,
    problem: str | None,
    generation: int | None,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """TailnetConnected for an agent whose network is tailscale: False, saying why, until
    the operator reads the device from the sidecar (not built yet: never silently True).
    An agent that left the tailnet gets TailnetNotUsed; others get no condition at all."""
    if not tailscale:
        if not any(c.get("type") == MeshAgentCondition.TAILNET_CONNECTED.value for c in conditions):
            return conditions
        state, reason = "False", MeshAgentReason.TAILNET_NOT_USED
        message = "spec.network is direct: the agent is not on the tailnet."
    elif problem is not None:
        state, reason, message = "False", MeshAgentReason.WORKLOAD_REFUSED, problem
    elif not configured:
        state, reason = "False", MeshAgentReason.TAILNET_NOT_CONFIGURED
        message = (
            "spec.network is tailscale, but the operator has no Tailscale configuration "
            "(AGENT_MESH_TAILSCALE_TAILNET_DOMAIN): no sidecar is added and the agent is "
            "not on the tailnet."
        )
    elif managed:
        state, reason = "False", MeshAgentReason.SIDECAR_NOT_READY
        message = (
            "The agent's pod has the tailscale sidecar, but the operator does not read its "
            "device into status.tailscale yet: the mesh reaches the agent through its "
            "Service, not over the tailnet."
        )
    else:
        state, reason = "False", MeshAgentReason.SIDECAR_NOT_INJECTED
        message = (
            "spec.network is tailscale, but the operator adds the tailscale sidecar only to "
            "pods it runs (spec.workload); this agent is not on the tailnet."
        )
    return set_condition(
        conditions,
        MeshAgentCondition.TAILNET_CONNECTED.value,
        state,
        reason.value,
        message,
        generation=generation,
        now=now,
    )
