"""Conditions move their transition time only when their status flips."""

from __future__ import annotations

import datetime as dt

from agent_mesh.domain.clock import FakeClock, rfc3339
from agent_mesh.domain.conditions import get_condition, set_condition


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
