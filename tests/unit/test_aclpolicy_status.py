"""What an ACLPolicy's status says in each standing."""

from __future__ import annotations

from agent_mesh.api.aclpolicy_status import policy_status_patch
from agent_mesh.domain.clock import FakeClock
from agent_mesh.domain.conditions import get_condition

clock = FakeClock()


def test_policy_in_force_is_accepted_and_ready() -> None:
    patch = policy_status_patch({}, 1, clock.now(), agent_type="worker")
    accepted = get_condition(patch["conditions"], "Accepted")
    ready = get_condition(patch["conditions"], "Ready")
    assert accepted is not None and accepted["status"] == "True"
    assert ready is not None and ready["reason"] == "PolicyInForce"
    assert patch["observedGeneration"] == 1


def test_conflicting_policy_names_the_one_in_force() -> None:
    patch = policy_status_patch({}, 1, clock.now(), agent_type="worker", conflicts_with="old")
    accepted = get_condition(patch["conditions"], "Accepted")
    assert accepted is not None
    assert (accepted["status"], accepted["reason"]) == ("False", "ConflictingPolicy")
    assert "old" in accepted["message"]


def test_invalid_policy_carries_the_error() -> None:
    patch = policy_status_patch(
        {}, 2, clock.now(), agent_type="x", invalid="spec.allowedActions[0]: unknown action"
    )
    accepted = get_condition(patch["conditions"], "Accepted")
    assert accepted is not None and accepted["reason"] == "InvalidPolicy"
    assert "allowedActions" in accepted["message"]


def test_unchanged_standing_writes_nothing() -> None:
    first = policy_status_patch({}, 1, clock.now(), agent_type="worker")
    assert policy_status_patch(first, 1, clock.now(), agent_type="worker") == {}
