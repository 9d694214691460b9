"""Health classification, transitions and the status-write budget, on a fake clock."""

from __future__ import annotations

import datetime as dt

import pytest

from agent_mesh.domain.clock import FakeClock
from agent_mesh.domain.health import HealthPolicy, HealthStatus, HealthTracker

KEY = ("ns", "worker-1")
H, D, U, P = (
    HealthStatus.HEALTHY,
    HealthStatus.DEGRADED,
    HealthStatus.UNREACHABLE,
    HealthStatus.PENDING,
)


def test_thresholds_healthy_below_60s_degraded_to_300s_unreachable_after() -> None:
    policy = HealthPolicy()
    seen = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    at = lambda s: policy.classify(seen, seen + dt.timedelta(seconds=s))  # noqa: E731
    assert [at(0), at(59.9), at(60), at(300), at(300.1)] == [H, H, D, D, U]
    assert policy.classify(None, seen) is P


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="degraded_after < unreachable_after"):
        HealthPolicy(dt.timedelta(seconds=300), dt.timedelta(seconds=60))


def test_agent_goes_healthy_degraded_unreachable_and_back() -> None:
    clock = FakeClock()
    tracker = HealthTracker()
    first = tracker.beat(KEY, clock.now(), active_tasks=0)
    assert first is not None and (first.previous, first.current) == (P, H)
    assert tracker.beat(KEY, clock.now(), active_tasks=1) is None  # still healthy: no event
    clock.advance(61)
    assert [(t.previous, t.current) for t in tracker.sweep(clock.now())] == [(H, D)]
    assert tracker.sweep(clock.now()) == []
    clock.advance(240)
    assert [(t.previous, t.current) for t in tracker.sweep(clock.now())] == [(D, U)]
    back = tracker.beat(KEY, clock.now(), active_tasks=0)
    assert back is not None and (back.previous, back.current) == (U, H)


def test_a_burst_of_heartbeats_is_one_status_write_per_interval() -> None:
    clock = FakeClock()
    tracker = HealthTracker()
    writes = 0
    for _ in range(300):  # one beat every 0.5 s for 150 s
        tracker.beat(KEY, clock.now(), active_tasks=1)
        for write in tracker.due(clock.now()):
            tracker.written(write, clock.now())
            writes += 1
        clock.advance(0.5)
    # the transition to healthy at 0 s, then lastSeen at 30, 60, 90 and 120 s
    assert writes == 5


def test_transitions_are_written_at_once_even_within_the_interval() -> None:
    clock = FakeClock()
    tracker = HealthTracker(HealthPolicy(write_interval=dt.timedelta(hours=1)))
    tracker.beat(KEY, clock.now(), 0)
    for write in tracker.due(clock.now()):
        tracker.written(write, clock.now())
    clock.advance(61)
    tracker.sweep(clock.now())
    (write,) = tracker.due(clock.now())
    assert write.transition and write.health is D


def test_nothing_changed_nothing_written() -> None:
    clock = FakeClock()
    tracker = HealthTracker()
    tracker.load(KEY, clock.now(), H)
    clock.advance(3600)
    assert tracker.due(clock.now()) == []


def test_reload_from_status_keeps_last_seen_so_the_sweep_continues() -> None:
    clock = FakeClock()
    tracker = HealthTracker()
    tracker.load(KEY, clock.now() - dt.timedelta(seconds=90), H)
    (transition,) = tracker.sweep(clock.now())
    assert (transition.previous, transition.current) == (H, D)


def test_counts_by_health() -> None:
    clock = FakeClock()
    tracker = HealthTracker()
    tracker.beat(("ns", "a"), clock.now(), 0)
    tracker.load(("ns", "b"), None, None)
    counts = tracker.counts()
    assert (counts[H], counts[P], counts[D]) == (1, 1, 0)


def test_a_new_agent_without_status_needs_no_write_until_it_beats() -> None:
    clock = FakeClock()
    tracker = HealthTracker()
    tracker.load(KEY, None, None)
    assert tracker.due(clock.now()) == []
    tracker.beat(KEY, clock.now(), 0)
    (write,) = tracker.due(clock.now())
    assert write.transition and write.health is H


def test_task_counts_and_average_are_written_within_the_budget_and_survive_a_reload() -> None:
    clock = FakeClock()
    tracker = HealthTracker()
    tracker.beat(KEY, clock.now(), active_tasks=0)
    for write in tracker.due(clock.now()):
        tracker.written(write, clock.now())
    tracker.task_finished(KEY, succeeded=True, duration_ms=100)
    tracker.task_finished(KEY, succeeded=True, duration_ms=300)
    tracker.task_finished(KEY, succeeded=False, duration_ms=50)
    assert tracker.due(clock.now()) == []  # within the write interval: wait
    clock.advance(30)
    (write,) = tracker.due(clock.now())
    assert (write.completed_tasks, write.failed_tasks, write.avg_execution_ms) == (2, 1, 200.0)
    tracker.written(write, clock.now())
    clock.advance(30)
    assert tracker.due(clock.now()) == []  # written: nothing new
    reloaded = HealthTracker()
    reloaded.load(KEY, clock.now(), H, completed_tasks=2, failed_tasks=1, avg_execution_ms=200.0)
    reloaded.task_finished(KEY, succeeded=True, duration_ms=500)
    state = reloaded.get(KEY)
    assert state is not None and state.avg_execution_ms == 300.0  # (200*2 + 500) / 3
