"""What one delivery of a task to its agent amounts to: a pure classification.

A result completes the task; a 202 means the agent will post its result later; an answer
that shows the agent never took the task (connection refused, TLS, no endpoint, 502/503/
504 such as the SDK's `HandedBack`) fails over using no retry; a timeout times the
attempt out; anything else fails the attempt, and the retry policy decides what is next.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from agent_mesh.domain.retry import AttemptOutcome
from agent_mesh.transport.client import Delivery, Outcome

NOT_TAKEN_STATUS: Final = frozenset({502, 503, 504})
"""Answers that say the agent did not take the task."""
NOT_TAKEN_OUTCOMES: Final = frozenset(
    {Outcome.CONNECT_ERROR, Outcome.TLS_ERROR, Outcome.NO_ENDPOINT}
)


class Verdict(StrEnum):
    COMPLETED = "completed"
    ACCEPTED = "accepted"
    """202: the agent runs the task and will post the result (or an error) later."""
    NOT_TAKEN = "not_taken"
    """The agent never had the task: fail over to another, using no retry."""
    TIMED_OUT = "timed_out"
    FAILED = "failed"


_ATTEMPT_OUTCOMES: Final = {
    Verdict.NOT_TAKEN: AttemptOutcome.UNREACHABLE,
    Verdict.TIMED_OUT: AttemptOutcome.TIMED_OUT,
    Verdict.FAILED: AttemptOutcome.FAILED,
}


@dataclass(frozen=True, slots=True)
class Classified:
    """A delivery's verdict, with the result (COMPLETED) or the error to record."""

    verdict: Verdict
    message: str = ""
    result: Any = None

    @property
    def attempt_outcome(self) -> AttemptOutcome:
        """How the attempt ended, for a verdict that ends it without a result."""
        return _ATTEMPT_OUTCOMES[self.verdict]


def classify(delivery: Delivery, agent_id: str | None, timeout_seconds: int) -> Classified:
    """The verdict on `delivery` of an attempt to agent `agent_id` with its timeout."""
    outcome = delivery.outcome
    if outcome is Outcome.OK:
        if delivery.status == 202:
            return Classified(Verdict.ACCEPTED)
        body = delivery.body if isinstance(delivery.body, dict) else {}
        if "result" not in body:
            return Classified(Verdict.FAILED, f"agent {agent_id} answered without a result")
        return Classified(Verdict.COMPLETED, result=body["result"])
    if outcome in NOT_TAKEN_OUTCOMES or (
        outcome is Outcome.HTTP_ERROR and delivery.status in NOT_TAKEN_STATUS
    ):
        what = delivery.code or outcome.value
        # a gateway's 502 often has no body (the tailnet proxy's, when the agent's sidecar
        # just restarted): the status is then all there is to say
        empty = f"HTTP {delivery.status} with no body" if delivery.status else ""
        message = f"agent {agent_id} did not take the task ({what}): {delivery.error or empty}"
        return Classified(Verdict.NOT_TAKEN, message.strip())
    if outcome is Outcome.EGRESS_REFUSED:  # nothing was sent; a retry may go elsewhere
        message = f"agent {agent_id} was not called: {delivery.error or 'egress refused'}"
        return Classified(Verdict.FAILED, message)
    if outcome is Outcome.TIMEOUT:
        message = f"agent {agent_id} did not finish within {timeout_seconds} s"
        return Classified(Verdict.TIMED_OUT, message)
    code = f"{delivery.code}: " if delivery.code else ""
    message = (
        f"agent {agent_id} failed the task ({delivery.status or outcome.value}) "
        f"{code}{delivery.error or ''}"
    )
    return Classified(Verdict.FAILED, message.strip())
