"""What the operator writes into a new MeshAgent's status, and that it writes nothing twice."""

from __future__ import annotations

from agent_mesh.controllers.meshagent_status import registration_patch
from agent_mesh.domain.clock import FakeClock, rfc3339
from agent_mesh.domain.conditions import get_condition


def _apply(status: dict, patch: dict) -> dict:  # type: ignore[type-arg]
    return {**status, **patch}


def test_a_new_agent_is_pending_registered_and_not_ready() -> None:
    clock = FakeClock()
    patch = registration_patch({}, 1, clock.now())
    assert patch["healthStatus"] == "pending"
    assert patch["registeredAt"] == rfc3339(clock.now())
    assert patch["observedGeneration"] == 1
    registered = get_condition(patch["conditions"], "Registered")
    ready = get_condition(patch["conditions"], "Ready")
    assert registered is not None and registered["status"] == "True"
    assert ready is not None and ready["status"] == "False"
    assert ready["reason"] == "AwaitingHeartbeat"


def test_a_registered_agent_needs_no_status_write() -> None:
    clock = FakeClock()
    status = _apply({}, registration_patch({}, 1, clock.now()))
    clock.advance(120)
    assert registration_patch(status, 1, clock.now()) == {}


def test_a_spec_change_only_bumps_observed_generation() -> None:
    clock = FakeClock()
    status = _apply({}, registration_patch({}, 1, clock.now()))
    clock.advance(5)
    patch = registration_patch(status, 2, clock.now())
    assert patch["observedGeneration"] == 2
    assert "registeredAt" not in patch and "healthStatus" not in patch
    for cond in patch["conditions"]:
        assert cond["observedGeneration"] == 2
        assert cond["lastTransitionTime"] == status["registeredAt"]


def test_registration_never_overrides_a_known_health() -> None:
    clock = FakeClock()
    status = _apply({}, registration_patch({}, 1, clock.now()))
    status["healthStatus"] = "healthy"
    patch = registration_patch(status, 1, clock.now())
    assert "healthStatus" not in patch
