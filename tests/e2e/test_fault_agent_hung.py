"""Fault: an agent takes a task and never answers. Each attempt ends at the task's
timeout and is retried on another agent, with growing backoff, until the retries are
spent."""

from __future__ import annotations

import datetime as dt
import os
import signal
from pathlib import Path

import pytest

from tests.agentprocs import AgentProcess, launch, register, wait_ready
from tests.conftest import Cluster, OperatorProcess, stop_operator, wait_for
from tests.e2e.conftest import own_operator
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


def test_an_agent_frozen_mid_task_loses_it_when_unreachable_without_using_a_retry(
    cluster: Cluster, crds: object, own_ns: str, processes: dict[str, AgentProcess], tmp_path: Path
) -> None:
    """SIGSTOP: the agent holds the task, neither answers nor beats. Its health, not a
    timeout, moves the task: unreachable, it fails over to the other agent."""
    operator = own_operator(
        cluster,
        tmp_path / "operator.log",
        extra_env={
            "AGENT_MESH_HEALTH_DEGRADED_SECONDS": "4",
            "AGENT_MESH_HEALTH_UNREACHABLE_SECONDS": "8",
            "AGENT_MESH_HEALTH_SWEEP_SECONDS": "0.25",
        },
    )
    frozen: AgentProcess | None = None
    try:
        for agent_id in ("first", "second"):
            url, credential = register(cluster, own_ns, agent_id, "worker", ["echo"])
            processes[agent_id] = launch(
                "echo_worker.py",
                operator,
                own_ns,
                agent_id,
                url,
                credential,
                tmp_path,
                extra_env={"AGENT_MESH_HEARTBEAT_SECONDS": "1"},  # well inside the 4 s
            )
        for agent in processes.values():
            wait_ready(agent)
        wait_for("both agents healthy", lambda: healthy(cluster, own_ns) == 2)
        create_task(
            cluster,
            own_ns,
            "held",
            taskType="sleep",
            requiredCapabilities=["echo"],
            retries=0,
            timeoutSeconds=120,  # far beyond the failover: the timeout must not move it
            payload={"seconds": 5},
        )
        doomed = wait_phase(cluster, own_ns, "held", {"Running"})["agentId"]
        survivor = "second" if doomed == "first" else "first"
        frozen = processes[doomed]
        os.kill(frozen.pid, signal.SIGSTOP)
        status = wait_phase(cluster, own_ns, "held", {"Completed", "Failed", "TimedOut"}, 90)
        assert status["phase"] == "Completed", status  # retries: 0, yet it completed
        assert status["agentId"] == survivor
        assert [(a["agentId"], a["outcome"]) for a in status["attempts"]] == [
            (doomed, "Unreachable"),
            (survivor, "Succeeded"),
        ]
        assert "became unreachable" in status["attempts"][0]["error"], status
    finally:
        if frozen is not None:
            os.kill(frozen.pid, signal.SIGCONT)  # so that its stop is a clean one
        stop_operator(operator)
