"""Retry, fail-over and giving up: the schedule and the decision after a failed attempt."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from agent_mesh.api import meshtask
from agent_mesh.domain.retry import AttemptOutcome, RetryAction, RetryPolicy
from agent_mesh.domain.task_queue import Priority

OK, FAILED, TIMED_OUT, LOST = (
    AttemptOutcome.SUCCEEDED,
    AttemptOutcome.FAILED,
    AttemptOutcome.TIMED_OUT,
    AttemptOutcome.UNREACHABLE,
)
T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def seconds(delta: dt.timedelta) -> float:
    return delta.total_seconds()


def exact() -> RetryPolicy:
    return RetryPolicy(jitter=0)


def test_backoff_doubles_from_one_second_up_to_sixty() -> None:
    policy = exact()
    delays = [seconds(policy.delay(n)) for n in range(1, 10)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert seconds(policy.nominal_delay(1000)) == 60  # no overflow for absurd counts


def test_jitter_shortens_a_delay_by_at_most_half_and_never_exceeds_the_cap() -> None:
    policy = RetryPolicy(rng=random.Random(3))
    for retry in (1, 3, 7, 12):
        nominal = seconds(policy.nominal_delay(retry))
        samples = [seconds(policy.delay(retry)) for _ in range(2000)]
        assert all(nominal / 2 < s <= nominal <= 60 for s in samples)
        assert min(samples) < nominal * 0.52 and max(samples) > nominal * 0.98  # spread


def test_a_seeded_policy_gives_the_same_schedule() -> None:
    first = [RetryPolicy(rng=random.Random(9)).delay(n) for n in range(1, 6)]
    second = [RetryPolicy(rng=random.Random(9)).delay(n) for n in range(1, 6)]
    assert first == second


def test_next_retry_is_counted_from_the_finish_and_rounded_up_to_a_second() -> None:
    policy = exact()
    assert policy.next_retry_at(T0, 1) == T0 + dt.timedelta(seconds=1)
    assert policy.next_retry_at(T0, 3) == T0 + dt.timedelta(seconds=4)
    late = T0 + dt.timedelta(milliseconds=300)
    assert policy.next_retry_at(late, 1) == T0 + dt.timedelta(seconds=2)  # never early


def test_a_failed_attempt_with_retries_left_is_retried_after_the_backoff() -> None:
    decision = exact().decide([FAILED], retries=3, finished_at=T0)
    assert decision.action is RetryAction.RETRY
    assert decision.at == T0 + dt.timedelta(seconds=1)
    assert decision.retries_used == 1
    assert decision.message == "attempt failed; retry 1 of 3 at 2026-01-01T12:00:01Z"
    assert not decision.gave_up


def test_a_timed_out_attempt_is_retried_like_a_failed_one() -> None:
    decision = exact().decide([FAILED, TIMED_OUT], retries=3, finished_at=T0)
    assert (decision.action, decision.retries_used) == (RetryAction.RETRY, 2)
    assert decision.at == T0 + dt.timedelta(seconds=2)
    assert decision.message.startswith("attempt timed out; retry 2 of 3")


def test_after_all_retries_the_task_fails() -> None:
    decision = exact().decide([FAILED, TIMED_OUT, FAILED, FAILED], retries=3, finished_at=T0)
    assert decision.action is RetryAction.FAILED
    assert decision.at is None and decision.gave_up
    assert decision.message == "attempt failed; all 3 retries used"


def test_when_the_last_attempt_timed_out_the_task_times_out() -> None:
    decision = exact().decide([FAILED, TIMED_OUT], retries=1, finished_at=T0)
    assert decision.action is RetryAction.TIMED_OUT
    assert decision.gave_up


def test_with_no_retries_the_first_failure_is_final() -> None:
    decision = exact().decide([FAILED], retries=0, finished_at=T0)
    assert decision.action is RetryAction.FAILED
    assert decision.message == "attempt failed; no retries allowed"


def test_an_unreachable_agent_fails_over_at_once_without_using_a_retry() -> None:
    decision = exact().decide([LOST], retries=0, finished_at=T0)
    assert decision.action is RetryAction.FAIL_OVER
    assert decision.at == T0
    assert decision.retries_used == 0
    assert "using no retry" in decision.message


def test_fail_overs_do_not_count_against_retries() -> None:
    outcomes = [LOST, FAILED, LOST, LOST, FAILED]
    decision = exact().decide(outcomes, retries=2, finished_at=T0)
    assert (decision.action, decision.retries_used) == (RetryAction.RETRY, 2)
    assert decision.at == T0 + dt.timedelta(seconds=2)


def test_fail_overs_in_a_row_back_off_after_the_first_few() -> None:
    policy = RetryPolicy(jitter=0, immediate_failovers=3)
    at = [policy.decide([LOST] * n, retries=3, finished_at=T0).at for n in range(1, 7)]
    assert at == [
        T0,
        T0,
        T0,
        T0 + dt.timedelta(seconds=1),
        T0 + dt.timedelta(seconds=2),
        T0 + dt.timedelta(seconds=4),
    ]
    again = policy.decide([LOST] * 5 + [FAILED, LOST], retries=3, finished_at=T0)
    assert again.at == T0  # a failure in between ends the streak


def test_decide_needs_a_failed_last_attempt() -> None:
    policy = exact()
    for outcomes in ([], [OK], [FAILED, None]):
        with pytest.raises(ValueError, match="ending with a failed attempt"):
            policy.decide(outcomes, retries=3, finished_at=T0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base": dt.timedelta(0)}, "0 < base <= cap"),
        ({"base": dt.timedelta(seconds=90)}, "0 < base <= cap"),
        ({"jitter": 1.0}, r"jitter must be in \[0, 1\)"),
        ({"immediate_failovers": -1}, "immediate_failovers must be >= 0"),
    ],
)
def test_policy_settings_are_checked(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="start at 1"):
        exact().nominal_delay(0)


def test_final_actions_are_task_phases_and_enums_are_the_apis() -> None:
    assert RetryAction.FAILED.value == meshtask.TaskPhase.FAILED.value
    assert RetryAction.TIMED_OUT.value == meshtask.TaskPhase.TIMED_OUT.value
    assert meshtask.AttemptOutcome is AttemptOutcome
    assert meshtask.Priority is Priority
