"""Fault: an agent takes a task and never answers. Each attempt ends at the task's
timeout and is retried on another agent, with growing backoff, until the retries are
spent."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.agentprocs import AgentProcess
from tests.conftest import Cluster, OperatorProcess, wait_for
from tests.e2e.test_tasks import create_task, healthy, start_worker, wait_phase

pytestmark = pytest.mark.fault_agent_hung


def test_a_hanging_agent_times_out_and_is_retried_elsewhere_until_timed_out(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    agents: dict[str, AgentProcess],
    tmp_path: Path,
) -> None:
    for name in ("slow-a", "slow-b"):
        start_worker(cluster, operator, ns, agents, tmp_path, name, ["echo"])
    wait_for("2 healthy agents", lambda: healthy(cluster, ns) == 2)
    create_task(
        cluster,
        ns,
        "stuck",
        taskType="sleep",
        requiredCapabilities=["echo"],
        timeoutSeconds=2,
        retries=3,
        payload={"seconds": 60},
    )
    status = wait_phase(cluster, ns, "stuck", {"Completed", "Failed", "TimedOut"}, timeout=60)
    assert status["phase"] == "TimedOut", status
    attempts = status["attempts"]
    assert [a["outcome"] for a in attempts] == ["TimedOut"] * 4
    assert attempts[0]["agentId"] != attempts[1]["agentId"]  # the retry went elsewhere
    gaps = [
        (_t(attempts[i + 1]["startedAt"]) - _t(attempts[i]["finishedAt"])).total_seconds()
        for i in range(3)
    ]
    # Retry k waits base·2^(k-1) less up to half of it (jitter): more than 0.5, 1, 2 s,
    # and the retry time is rounded up to a whole second, so with the second-precision
    # stamps of status the gaps are at least 1, 2, 3 s. A backoff that stays flat or
    # shrinks misses the later floors (jitter lets neighbouring delays touch at their
    # bounds, so the floors, not the raw gaps, are what grows strictly).
    floors = [1, 2, 3]
    assert all(gap >= floor for gap, floor in zip(gaps, floors, strict=True)), (gaps, attempts)
    assert status["conditions"]
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "AttemptTimedOut"


def _t(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
