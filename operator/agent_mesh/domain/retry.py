"""What happens after an attempt ends without a result: retry later, fail over now, or give
up (DESIGN §4).

Decisions are computed from the outcomes recorded in status.attempts and the failed
attempt's finish time, so an operator restart neither resets nor loses a timer.

Backoff is `min(1 s · 2^(n-1), 60 s)` before the n-th retry, shortened by a random part of
up to half ("equal jitter"): a delay falls in (d/2, d]. Jittering downwards only keeps the
documented schedule an upper bound (never above the cap, never zero or negative), and
spreading over half the window keeps tasks that failed together (one agent crashed) from
retrying in lockstep. Status holds whole seconds, so retry times are rounded up to one:
a restart never retries early.

Losing the agent (unreachable, or a dispatch that never reached it) is not the task's
failure: it fails over to another agent at once and uses no retry. Only when fail-overs
follow one another (every agent's dispatch failing) do they back off on the same
schedule, so a broken network cannot make a task bounce in a tight loop of status writes.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from agent_mesh.domain.clock import rfc3339

BACKOFF_BASE: Final = dt.timedelta(seconds=1)
BACKOFF_CAP: Final = dt.timedelta(seconds=60)
_MAX_DOUBLINGS: Final = 30
"""2^30 s is decades: beyond it the cap has long applied (and timedelta would overflow)."""


class AttemptOutcome(StrEnum):
    """How one attempt ended."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    UNREACHABLE = "Unreachable"
    """The agent became unreachable; the task failed over without using a retry."""
    # Also the outcome of a dispatch that failed before the agent received the task
    # (connection refused, TLS, tailnet down): the agent never had it, so no retry is used.


_USES_A_RETRY: Final = frozenset({AttemptOutcome.FAILED, AttemptOutcome.TIMED_OUT})


class RetryAction(StrEnum):
    """What to do next; FAILED and TIMED_OUT are the task's final phase."""

    RETRY = "Retry"
    """Route again at `at`, preferring an agent not tried yet; one retry is used."""
    FAIL_OVER = "FailOver"
    """Route again at `at` (usually at once) on another agent; no retry is used."""
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """The next step for a task whose attempt ended without a result."""

    action: RetryAction
    at: dt.datetime | None
    """When to route again (status.nextRetryAt); None when the task gives up."""
    retries_used: int
    message: str

    @property
    def gave_up(self) -> bool:
        return self.at is None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff schedule and retry rules (operator settings; defaults per DESIGN §4)."""

    base: dt.timedelta = BACKOFF_BASE
    cap: dt.timedelta = BACKOFF_CAP
    jitter: float = 0.5
    """Largest fraction of a delay taken off at random; 0 disables jitter."""
    immediate_failovers: int = 3
    """Fail-overs in a row that happen at once; later ones back off."""
    rng: random.Random = field(
        default_factory=random.Random,  # load spreading, not security
        compare=False,
        repr=False,
    )

    def __post_init__(self) -> None:
        if not dt.timedelta(0) < self.base <= self.cap:
            raise ValueError(f"backoff must satisfy 0 < base <= cap (got {self.base}, {self.cap})")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1) (got {self.jitter})")
        if self.immediate_failovers < 0:
            raise ValueError(f"immediate_failovers must be >= 0 (got {self.immediate_failovers})")

    def nominal_delay(self, retry: int) -> dt.timedelta:
        """`min(base · 2^(retry-1), cap)`: the delay before the `retry`-th retry, unjittered."""
        if retry < 1:
            raise ValueError(f"retry numbers start at 1 (got {retry})")
        return min(self.base * (1 << min(retry - 1, _MAX_DOUBLINGS)), self.cap)

    def delay(self, retry: int) -> dt.timedelta:
        """The jittered delay: in (nominal · (1 - jitter), nominal]."""
        return self.nominal_delay(retry) * (1 - self.jitter * self.rng.random())

    def next_retry_at(self, finished_at: dt.datetime, retry: int) -> dt.datetime:
        """When the `retry`-th retry is due, from the finish time of the attempt that
        failed; rounded up to a whole second, as status stores it."""
        return _ceil_second(finished_at + self.delay(retry))

    def decide(
        self,
        outcomes: Sequence[AttemptOutcome | None],
        *,
        retries: int,
        finished_at: dt.datetime,
    ) -> RetryDecision:
        """The next step after the last of `outcomes` (status.attempts' outcomes, oldest
        first, ending with the attempt that just ended), given spec.retries."""
        if not outcomes or outcomes[-1] in (None, AttemptOutcome.SUCCEEDED):
            raise ValueError("decide needs outcomes ending with a failed attempt")
        last = outcomes[-1]
        used = sum(1 for o in outcomes if o in _USES_A_RETRY)
        if last is AttemptOutcome.UNREACHABLE:
            streak = 0
            for outcome in reversed(outcomes):
                if outcome is not AttemptOutcome.UNREACHABLE:
                    break
                streak += 1
            waits = streak - self.immediate_failovers
            at = finished_at if waits <= 0 else self.next_retry_at(finished_at, waits)
            when = "now" if waits <= 0 else f"at {rfc3339(at)} ({streak} fail-overs in a row)"
            return RetryDecision(
                RetryAction.FAIL_OVER,
                at,
                used,
                f"agent unreachable; failing over to another agent {when}, using no retry",
            )
        what = "attempt timed out" if last is AttemptOutcome.TIMED_OUT else "attempt failed"
        if used <= retries:
            at = self.next_retry_at(finished_at, used)
            return RetryDecision(
                RetryAction.RETRY,
                at,
                used,
                f"{what}; retry {used} of {retries} at {rfc3339(at)}",
            )
        action = RetryAction.TIMED_OUT if last is AttemptOutcome.TIMED_OUT else RetryAction.FAILED
        spent = "no retries allowed" if retries == 0 else f"all {retries} retries used"
        return RetryDecision(action, None, retries, f"{what}; {spent}")


def _ceil_second(moment: dt.datetime) -> dt.datetime:
    if moment.microsecond == 0:
        return moment
    return moment.replace(microsecond=0) + dt.timedelta(seconds=1)
