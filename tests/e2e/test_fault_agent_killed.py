"""Fault: an agent process killed with SIGKILL mid-task (no drain, no goodbye). The
task is lost to another agent without using one of its retries."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_mesh.testing import OperatorProcess
from tests.support.agents import AgentProcess, start_worker
from tests.support.cluster import Cluster
from tests.support.tasks import create_task, healthy, wait_phase
from tests.support.waiting import wait_for

pytestmark = pytest.mark.fault_agent_killed


def test_an_agent_killed_mid_task_loses_it_to_another_without_using_a_retry(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    agents: dict[str, AgentProcess],
    tmp_path: Path,
) -> None:
    doomed = start_worker(cluster, operator, ns, agents, tmp_path, "doomed", ["echo"])
    wait_for("doomed healthy", lambda: healthy(cluster, ns) == 1)
    create_task(
        cluster,
        ns,
        "long",
        taskType="sleep",
        requiredCapabilities=["echo"],
        retries=0,
        payload={"seconds": 4},
    )
    wait_phase(cluster, ns, "long", {"Running"})
    start_worker(cluster, operator, ns, agents, tmp_path, "survivor", ["echo"])
    wait_for("survivor healthy", lambda: healthy(cluster, ns) == 2)
    doomed.kill()
    status = wait_phase(cluster, ns, "long", {"Completed", "Failed", "TimedOut"})
    assert status["phase"] == "Completed", status  # retries: 0, yet it completed
    assert status["agentId"] == "survivor"
    outcomes = [(a["agentId"], a["outcome"]) for a in status["attempts"]]
    assert outcomes == [("doomed", "Unreachable"), ("survivor", "Succeeded")]
