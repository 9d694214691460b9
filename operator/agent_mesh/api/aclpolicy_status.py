"""What an ACLPolicy's status should say: a pure function of where it stands."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from agent_mesh.api.aclpolicy import ACLPolicyCondition, ACLPolicyReason
from agent_mesh.domain.conditions import ConditionSet


def policy_status_patch(
    status: Mapping[str, Any],
    generation: int | None,
    now: dt.datetime,
    *,
    agent_type: str,
    invalid: str | None = None,
    conflicts_with: str | None = None,
) -> dict[str, Any]:
    """Accepted and Ready for a policy that is in force, invalid, or shadowed by an older
    one; empty when nothing would change (no write)."""
    if invalid is not None:
        accepted = ("False", ACLPolicyReason.INVALID_POLICY, invalid)
    elif conflicts_with is not None:
        accepted = (
            "False",
            ACLPolicyReason.CONFLICTING_POLICY,
            f"policy {conflicts_with} already governs type {agent_type} in this namespace "
            "(the oldest policy wins); merge the two or delete one",
        )
    else:
        accepted = ("True", ACLPolicyReason.POLICY_ACCEPTED, "The policy is valid.")
    in_force = accepted[0] == "True"
    ready = (
        (
            "True",
            ACLPolicyReason.POLICY_IN_FORCE,
            f"Agents of type {agent_type} are governed by it.",
        )
        if in_force
        else ("False", ACLPolicyReason.POLICY_NOT_IN_FORCE, "The policy is not applied.")
    )
    conditions = ConditionSet(status.get("conditions") or [], generation=generation, now=now)
    conditions.set(ACLPolicyCondition.ACCEPTED, *accepted)
    conditions.set(ACLPolicyCondition.READY, *ready)
    return conditions.patch(status)
