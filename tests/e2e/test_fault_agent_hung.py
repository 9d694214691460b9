"""Fault: an agent takes a task and never answers. Each attempt ends at the task's
timeout and is retried on another agent, with growing backoff, until the retries are
spent."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from agent_mesh.testing import OperatorProcess
from tests.support.agents import AgentProcess, start_worker
from tests.support.cluster import Cluster
from tests.support.tasks import create_task, healthy, wait_phase
from tests.support.waiting import wait_for

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
        retries=2,
        payload={"seconds": 60},
    )
    status = wait_phase(cluster, ns, "stuck", {"Completed", "Failed", "TimedOut"}, timeout=60)
    assert status["phase"] == "TimedOut", status
    attempts = status["attempts"]
    assert [a["outcome"] for a in attempts] == ["TimedOut"] * 3
    assert attempts[0]["agentId"] != attempts[1]["agentId"]  # the retry went elsewhere
    gaps = [
        (_t(attempts[i + 1]["startedAt"]) - _t(attempts[i]["finishedAt"])).total_seconds()
        for i in range(2)
    ]
    assert gaps[1] >= gaps[0] - 1, gaps  # backoff grows (second precision in status)
    assert status["conditions"]
    failed = {c["type"]: c for c in status["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == "AttemptTimedOut"


def _t(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
