"""Fault: an agent process killed with SIGKILL mid-task (no drain, no goodbye). The
task is lost to another agent without using one of its retries."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agentprocs import AgentProcess
from tests.conftest import Cluster, OperatorProcess, wait_for
from tests.e2e.test_tasks import create_task, healthy, start_worker, wait_phase

pytestmark = pytest.mark.fault_agent_killed


def test_an_agent_killed_mid_task_loses_it_to_another_without_using_a_retry(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    agents: dict[str, AgentProcess],
    tmp_path: Path,
) -> None:
    # Both agents are healthy before the task exists: no agent has to come up inside the
    # task's run. Whichever gets the task is killed; the other must finish it.
    for agent_id in ("first", "second"):
        start_worker(cluster, operator, ns, agents, tmp_path, agent_id, ["echo"])
    wait_for("both agents healthy", lambda: healthy(cluster, ns) == 2)
    create_task(
        cluster,
        ns,
        "long",
        taskType="sleep",
        requiredCapabilities=["echo"],
        retries=0,
        # long enough that the kill lands while the task runs however slow the machine is
        payload={"seconds": 10},
    )
    running = wait_phase(cluster, ns, "long", {"Running"})
    doomed = running["agentId"]
    survivor = "second" if doomed == "first" else "first"
    agents[doomed].kill()
    status = wait_phase(cluster, ns, "long", {"Completed", "Failed", "TimedOut"})
    assert status["phase"] == "Completed", status  # retries: 0, yet it completed
    assert status["agentId"] == survivor
    outcomes = [(a["agentId"], a["outcome"]) for a in status["attempts"]]
    assert outcomes == [(doomed, "Unreachable"), (survivor, "Succeeded")]
