"""Fault: an agent process killed with SIGKILL mid-task (no drain, no goodbye). The
task is lost to another agent without using one of its retries."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_mesh.testing import OperatorProcess
from tests.support.agents import AgentProcess, worker_pair
from tests.support.cluster import Cluster
from tests.support.tasks import fails_over

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
    worker_pair(cluster, operator, ns, agents, tmp_path)
    fails_over(
        cluster,
        ns,
        "long",
        lambda doomed: agents[doomed].kill(),
        # long enough that the kill lands while the task runs however slow the machine is
        payload={"seconds": 10},
    )
