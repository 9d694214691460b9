"""The coordinator's timer heap: kinds are an enum, each kind has its handler, and timers
fire in time order, those armed while firing included."""

from __future__ import annotations

import datetime as dt

import pytest

from agent_mesh.coordinator.timers import TimerKind, Timers

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_timers_fire_in_time_order_with_their_kinds_handler_and_wake_the_loop() -> None:
    fired: list[tuple[TimerKind, str]] = []
    woken: list[int] = []
    timers = Timers(lambda: woken.append(1))
    timers.handle({kind: (lambda key, kind=kind: fired.append((kind, key))) for kind in TimerKind})
    timers.at(at(5), TimerKind.TTL, "b")
    timers.at(at(1), TimerKind.DUE, "a")
    timers.at(at(9), TimerKind.TIMEOUT, "c")
    assert len(woken) == 3

    timers.fire_due(at(5))
    assert fired == [(TimerKind.DUE, "a"), (TimerKind.TTL, "b")]
    assert timers.seconds_until_next(at(5)) == 4.0


def test_a_timer_armed_while_firing_fires_in_the_same_pass_when_already_due() -> None:
    fired: list[str] = []
    timers = Timers(lambda: None)

    def due(key: str) -> None:
        fired.append(key)
        if key == "first":
            timers.at(at(0), TimerKind.DUE, "armed while firing")

    timers.handle({kind: due for kind in TimerKind})
    timers.at(at(0), TimerKind.DUE, "first")
    timers.fire_due(at(0))
    assert fired == ["first", "armed while firing"]
    assert timers.seconds_until_next(at(0)) is None


def test_every_timer_kind_needs_a_handler() -> None:
    timers = Timers(lambda: None)
    with pytest.raises(ValueError, match=r"none for: reconcile, ttl$"):
        timers.handle({TimerKind.DUE: print, TimerKind.TIMEOUT: print})
