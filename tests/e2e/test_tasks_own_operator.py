"""MeshTask scenarios that need an operator of their own: one with a strategy plug-in
installed as an entry point. (The operator killed with 200 tasks in flight:
test_fault_operator_killed.py.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.e2e.conftest import OWN_FAMILY
from tests.support.agents import AgentProcess, workers
from tests.support.cluster import Cluster
from tests.support.operators import own_operator
from tests.support.tasks import agent_status, create_task, create_tasks, task_status, wait_phase
from tests.support.waiting import wait_for

PLUGIN = '''
class LastByName:
    """Chooses the candidate whose agentId sorts last."""

    def select(self, candidates, task):
        return max(candidates, key=lambda c: c.agent_id)
'''


def test_a_strategy_installed_as_an_entry_point_is_used_when_a_task_names_it(
    cluster: Cluster, crds: Any, own_ns: str, agents: dict[str, AgentProcess], tmp_path: Path
) -> None:
    site = tmp_path / "site"
    dist = site / "mesh_test_strategies-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "mesh_test_strategies.py").write_text(PLUGIN)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: mesh-test-strategies\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[agent_mesh.strategies]\nlast-by-name = mesh_test_strategies:LastByName\n"
    )
    # the plug-in's site added to the path, not replacing it (where agent_mesh may be)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, "AGENT_MESH_STATUS_WRITE_SECONDS": "1"}
    with own_operator(cluster, tmp_path / "operator.log", OWN_FAMILY, extra_env=env) as operator:
        workers(cluster, operator, own_ns, agents, tmp_path, count=3)
        names = [f"p{i}" for i in range(4)]
        create_tasks(
            cluster,
            own_ns,
            names,
            taskType="echo",
            requiredCapabilities=["echo"],
            strategy="last-by-name",
        )
        for name in names:
            status = wait_phase(cluster, own_ns, name, {"Completed", "Failed", "TimedOut"})
            assert status["phase"] == "Completed" and status["agentId"] == "w2", status

        # analytics: w2 ran all four; its MeshAgent status counts them
        def counted() -> dict[str, Any] | None:
            status = agent_status(cluster, own_ns, "w2")
            return status if status.get("completedTasks") == 4 else None

        analytics = wait_for("w2's completedTasks to reach 4", counted, timeout=20)
        assert analytics["failedTasks"] == 0 and analytics["avgExecutionMs"] >= 0
        create_task(cluster, own_ns, "unknown", taskType="echo", strategy="no-such-strategy")
        wait_for(
            "the UnknownStrategy condition",
            lambda: any(
                c["reason"] == "UnknownStrategy" and "no-such-strategy" in c["message"]
                for c in task_status(cluster, own_ns, "unknown").get("conditions", [])
            ),
        )
