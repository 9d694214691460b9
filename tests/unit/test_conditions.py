"""Conditions move their transition time only when their status flips."""

from __future__ import annotations

import datetime as dt

from agent_mesh.domain.clock import FakeClock, rfc3339
from agent_mesh.domain.conditions import ConditionSet, get_condition, set_condition


def test_reasserting_a_condition_changes_nothing() -> None:
    clock = FakeClock()
    first = set_condition(
        [], "Ready", "False", "AwaitingHeartbeat", "waiting", generation=1, now=clock.now()
    )
    clock.advance(60)
    again = set_condition(
        first, "Ready", "False", "AwaitingHeartbeat", "waiting", generation=1, now=clock.now()
    )
    assert again == first


def test_a_flip_moves_the_transition_time_and_keeps_other_conditions() -> None:
    clock = FakeClock()
    conds = set_condition(
        [], "Registered", "True", "Registered", "ok", generation=1, now=clock.now()
    )
    conds = set_condition(
        conds, "Ready", "False", "AwaitingHeartbeat", "waiting", generation=1, now=clock.now()
    )
    clock.advance(30)
    flipped = set_condition(
        conds, "Ready", "True", "HeartbeatReceived", "up", generation=2, now=clock.now()
    )
    ready = get_condition(flipped, "Ready")
    assert ready is not None
    assert ready["lastTransitionTime"] == rfc3339(clock.now())
    assert ready["observedGeneration"] == 2
    assert [c["type"] for c in flipped] == ["Registered", "Ready"]
    assert get_condition(flipped, "Registered") == get_condition(conds, "Registered")


def test_rfc3339_is_utc_with_z_suffix() -> None:
    moment = dt.datetime(2026, 5, 1, 12, 30, 15, 999, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert rfc3339(moment) == "2026-05-01T10:30:15Z"


def test_a_status_whose_conditions_and_generation_hold_needs_no_write() -> None:
    clock = FakeClock()
    first = ConditionSet([], generation=3, now=clock.now())
    first.set("Ready", "True", "AgentHealthy", "up")
    status = {"conditions": first.items, "observedGeneration": 3}
    clock.advance(60)
    again = ConditionSet(status["conditions"], generation=3, now=clock.now())
    again.set("Ready", "True", "AgentHealthy", "up")
    assert again.patch(status) == {}


def test_a_new_generation_is_written_with_the_conditions_that_changed() -> None:
    clock = FakeClock()
    conditions = ConditionSet([], generation=4, now=clock.now())
    conditions.set_check("EndpointAllowed", "http://10.0.0.1 is refused", ("Ok", "fine"), "Refused")
    patch = conditions.patch({"observedGeneration": 3})
    assert patch["observedGeneration"] == 4
    [allowed] = patch["conditions"]
    assert (allowed["status"], allowed["reason"], allowed["message"]) == (
        "False",
        "Refused",
        "http://10.0.0.1 is refused",
    )
