"""What a MeshAgent's status should say on registration: a pure function of the old one."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from agent_mesh.api.meshagent import HealthStatus, MeshAgentCondition, MeshAgentReason
from agent_mesh.domain.clock import rfc3339
from agent_mesh.domain.conditions import set_condition


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
        conditions = set_condition(
            conditions,
            MeshAgentCondition.READY.value,
            "False",
            MeshAgentReason.AWAITING_HEARTBEAT.value,
            "Waiting for the agent's first heartbeat.",
            generation=generation,
            now=now,
        )
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
