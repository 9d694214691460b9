"""What a delivery of a task to its agent amounts to (coordinator/outcomes.py), alone:
the verdict decides whether the task completes, waits for a report, fails over using no
retry, times out or fails, and the message says why in terms an operator can act on."""

from __future__ import annotations

from typing import Any

import pytest

from agent_mesh.coordinator.outcomes import Verdict, classify
from agent_mesh.domain.retry import AttemptOutcome
from agent_mesh.transport.client import Delivery, Outcome


def delivery(outcome: Outcome, status: int | None = None, body: Any = None, **kw: Any) -> Delivery:
    return Delivery("https://w1.agents.test", outcome, 1, status=status, body=body, **kw)


def test_an_answer_with_a_result_completes_the_task_with_that_result() -> None:
    judged = classify(delivery(Outcome.OK, 200, {"result": {"sum": 3}}), "w1", 30)
    assert judged.verdict is Verdict.COMPLETED
    assert judged.result == {"sum": 3}


def test_a_null_result_is_still_a_result() -> None:
    judged = classify(delivery(Outcome.OK, 200, {"result": None}), "w1", 30)
    assert (judged.verdict, judged.result) == (Verdict.COMPLETED, None)


def test_a_202_means_the_agent_will_report_later() -> None:
    assert classify(delivery(Outcome.OK, 202), "w1", 30).verdict is Verdict.ACCEPTED


@pytest.mark.parametrize("body", [{"taskUid": "t", "attempt": 1}, ["result"], "result", None])
def test_an_answer_without_a_result_fails_the_attempt(body: Any) -> None:
    judged = classify(delivery(Outcome.OK, 200, body), "w1", 30)
    assert judged.verdict is Verdict.FAILED
    assert judged.attempt_outcome is AttemptOutcome.FAILED
    assert judged.message == "agent w1 answered without a result"


@pytest.mark.parametrize(
    ("outcome", "status", "code", "what"),
    [
        (Outcome.CONNECT_ERROR, None, None, "connect_error"),
        (Outcome.TLS_ERROR, None, None, "tls_error"),
        (Outcome.NO_ENDPOINT, None, None, "no_endpoint"),
        (Outcome.HTTP_ERROR, 502, None, "http_error"),
        (Outcome.HTTP_ERROR, 503, "HandedBack", "HandedBack"),
        (Outcome.HTTP_ERROR, 504, None, "http_error"),
    ],
)
def test_an_agent_that_never_took_the_task_fails_over_using_no_retry(
    outcome: Outcome, status: int | None, code: str | None, what: str
) -> None:
    judged = classify(delivery(outcome, status, code=code, error="refused"), "w1", 30)
    assert judged.verdict is Verdict.NOT_TAKEN
    assert judged.attempt_outcome is AttemptOutcome.UNREACHABLE
    assert judged.message == f"agent w1 did not take the task ({what}): refused"


def test_a_gateway_error_without_a_body_names_its_status() -> None:
    """The operator's tailnet proxy answers a bare 502 when the agent's sidecar has just
    restarted: the attempt's error said nothing after its colon."""
    judged = classify(delivery(Outcome.HTTP_ERROR, 502, error=""), "w1", 30)
    assert judged.verdict is Verdict.NOT_TAKEN
    assert judged.message == "agent w1 did not take the task (http_error): HTTP 502 with no body"


def test_a_refused_egress_fails_the_attempt_saying_the_agent_was_not_called() -> None:
    judged = classify(delivery(Outcome.EGRESS_REFUSED, error="10.0.0.1 is denied"), "w1", 30)
    assert judged.verdict is Verdict.FAILED
    assert judged.message == "agent w1 was not called: 10.0.0.1 is denied"
    bare = classify(delivery(Outcome.EGRESS_REFUSED), "w1", 30)
    assert bare.message == "agent w1 was not called: egress refused"


def test_a_timeout_times_the_attempt_out_naming_the_timeout() -> None:
    judged = classify(delivery(Outcome.TIMEOUT, error="no response"), "w1", 30)
    assert judged.verdict is Verdict.TIMED_OUT
    assert judged.attempt_outcome is AttemptOutcome.TIMED_OUT
    assert judged.message == "agent w1 did not finish within 30 s"


@pytest.mark.parametrize(
    ("outcome", "status", "code", "error", "message"),
    [
        (
            Outcome.HTTP_ERROR,
            500,
            "TaskFailed",
            "boom",
            "agent w1 failed the task (500) TaskFailed: boom",
        ),
        (Outcome.HTTP_ERROR, 403, None, None, "agent w1 failed the task (403)"),
        (
            Outcome.BAD_RESPONSE,
            None,
            None,
            "not JSON",
            "agent w1 failed the task (bad_response) not JSON",
        ),
    ],
)
def test_any_other_answer_fails_the_attempt_with_the_agents_code_and_error(
    outcome: Outcome, status: int | None, code: str | None, error: str | None, message: str
) -> None:
    judged = classify(delivery(outcome, status, code=code, error=error), "w1", 30)
    assert judged.verdict is Verdict.FAILED
    assert judged.attempt_outcome is AttemptOutcome.FAILED
    assert judged.message == message


def test_a_verdict_that_ends_no_attempt_has_no_attempt_outcome() -> None:
    with pytest.raises(KeyError):
        _ = classify(delivery(Outcome.OK, 202), "w1", 30).attempt_outcome
