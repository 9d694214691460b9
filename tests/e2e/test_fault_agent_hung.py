"""Fault: an agent takes a task and never answers. Each attempt ends at the task's
timeout and is retried on another agent, with growing backoff, until the retries are
spent."""

from __future__ import annotations

import datetime as dt
import os
import signal
from pathlib import Path

import pytest

from agent_mesh.testing import OperatorProcess
from tests.e2e.conftest import OWN_FAMILY
from tests.support.agents import AgentProcess, start_worker, worker_pair
from tests.support.cluster import Cluster
from tests.support.operators import own_operator
from tests.support.tasks import create_task, fails_over, healthy, wait_phase
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


def test_an_agent_frozen_mid_task_loses_it_when_unreachable_without_using_a_retry(
    cluster: Cluster, crds: object, own_ns: str, agents: dict[str, AgentProcess], tmp_path: Path
) -> None:
    """SIGSTOP: the agent holds the task, neither answers nor beats. Its health, not a
    timeout, moves the task: unreachable, it fails over to the other agent."""
    frozen: list[AgentProcess] = []

    def freeze(agent_id: str) -> None:
        frozen.append(agents[agent_id])
        os.kill(agents[agent_id].pid, signal.SIGSTOP)

    with own_operator(
        cluster,
        tmp_path / "operator.log",
        OWN_FAMILY,
        extra_env={
            "AGENT_MESH_HEALTH_DEGRADED_SECONDS": "4",
            "AGENT_MESH_HEALTH_UNREACHABLE_SECONDS": "8",
            "AGENT_MESH_HEALTH_SWEEP_SECONDS": "0.25",
        },
    ) as operator:
        try:
            worker_pair(
                cluster,
                operator,
                own_ns,
                agents,
                tmp_path,
                {"AGENT_MESH_HEARTBEAT_SECONDS": "1"},  # well inside the 4 s
            )
            status = fails_over(
                cluster,
                own_ns,
                "held",
                freeze,
                within=90,
                timeoutSeconds=120,  # far beyond the failover: the timeout must not move it
                payload={"seconds": 5},
            )
            assert "became unreachable" in status["attempts"][0]["error"], status
        finally:
            for agent in frozen:
                os.kill(agent.pid, signal.SIGCONT)  # so that its stop is a clean one
