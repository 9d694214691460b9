"""Fault: the operator killed with SIGKILL while 200 tasks are in flight (no shutdown
code runs). A new operator finishes every task from what the first left in the
cluster: none is lost and none runs twice, by the agents' own logs."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent_mesh.api.common import GROUP, VERSION
from tests.e2e.conftest import OWN_FAMILY
from tests.support.agents import AgentProcess, workers
from tests.support.cluster import Cluster
from tests.support.operators import own_operator, start_own_operator
from tests.support.tasks import create_tasks, task_status
from tests.support.waiting import wait_for

pytestmark = pytest.mark.fault_operator_killed


def phases(cluster: Cluster, ns: str) -> Counter[str]:
    items = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "meshtasks")
    return Counter(str(i.get("status", {}).get("phase")) for i in items["items"])


def test_operator_killed_with_200_tasks_in_flight_loses_none_and_runs_none_twice(
    cluster: Cluster, crds: Any, own_ns: str, agents: dict[str, AgentProcess], tmp_path: Path
) -> None:
    first = start_own_operator(cluster, tmp_path / "operator-1.log", OWN_FAMILY)
    try:
        workers(cluster, first, own_ns, agents, tmp_path, count=4, slots=50)
        names = [f"t{i:03d}" for i in range(200)]
        create_tasks(
            cluster,
            own_ns,
            names,
            taskType="sleep",
            requiredCapabilities=["echo"],
            payload={"seconds": 5},
        )
        wait_for("150 tasks running", lambda: phases(cluster, own_ns)["Running"] >= 150, timeout=60)
    finally:
        first.kill()
    in_flight = phases(cluster, own_ns)
    assert in_flight["Running"] >= 150, in_flight
    with own_operator(cluster, tmp_path / "operator-2.log", OWN_FAMILY):
        wait_for(
            "every task to end", lambda: phases(cluster, own_ns)["Completed"] == 200, timeout=120
        )
    for name in names:
        status = task_status(cluster, own_ns, name)
        assert [a["outcome"] for a in status["attempts"]][-1] == "Succeeded", (name, status)
        assert sum(a["outcome"] == "Succeeded" for a in status["attempts"]) == 1
    uids = {
        name: cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, own_ns, "meshtasks", name
        )["metadata"]["uid"]
        for name in names
    }
    ran = Counter(
        match
        for agent in agents.values()
        for match in re.findall(r"task (\S+) attempt \d+: sleeping", agent.logs())
    )
    twice = {
        name: (task_status(cluster, own_ns, name)["attempts"], ran[uid])
        for name, uid in uids.items()
        if ran[uid] != 1
    }
    assert not twice, f"tasks that ran twice, or never: {twice}"
