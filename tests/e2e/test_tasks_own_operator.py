"""MeshTask scenarios that need an operator of their own: killed with SIGKILL while 200
tasks are in flight, and one with a strategy plug-in installed as an entry point."""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.agentprocs import AgentProcess, launch, register, wait_ready
from tests.conftest import (
    SESSION,
    Cluster,
    OperatorProcess,
    ensure_namespace,
    start_operator,
    stop_operator,
    wait_for,
)
from tests.e2e.test_tasks import create_task, healthy, task_status, wait_phase
from tests.meshhelpers import GROUP, VERSION

PREFIX = f"amr-{SESSION}-"


@pytest.fixture
def own_ns(cluster: Cluster) -> Iterator[str]:
    name = ensure_namespace(cluster, f"{PREFIX}{uuid.uuid4().hex[:8]}")
    yield name
    client.CoreV1Api(cluster.api).delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def processes() -> Iterator[dict[str, AgentProcess]]:
    running: dict[str, AgentProcess] = {}
    yield running
    for agent in running.values():
        agent.stop()


def own_operator(
    cluster: Cluster, log: Path, extra_env: dict[str, str] | None = None
) -> OperatorProcess:
    return start_operator(
        cluster,
        log,
        "--no-webhooks",
        watch=f"{PREFIX}*",
        operator_namespace=f"{PREFIX}system",
        extra_env=extra_env,
    )


def workers(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    processes: dict[str, AgentProcess],
    log_dir: Path,
    count: int,
    slots: int = 10,
) -> None:
    for i in range(count):
        agent_id = f"w{i}"
        url, credential = register(cluster, ns, agent_id, "worker", ["echo"])
        cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "meshagents", agent_id, {"spec": {"maxConcurrentTasks": slots}}
        )
        processes[agent_id] = launch(
            "echo_worker.py", operator, ns, agent_id, url, credential, log_dir
        )
    for agent in processes.values():
        wait_ready(agent)
    wait_for(f"{count} healthy workers", lambda: healthy(cluster, ns) == count)


def phases(cluster: Cluster, ns: str) -> Counter[str]:
    items = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "meshtasks")
    return Counter(str(i.get("status", {}).get("phase")) for i in items["items"])


def test_operator_killed_with_200_tasks_in_flight_loses_none_and_runs_none_twice(
    cluster: Cluster, crds: Any, own_ns: str, processes: dict[str, AgentProcess], tmp_path: Path
) -> None:
    first = own_operator(cluster, tmp_path / "operator-1.log")
    try:
        workers(cluster, first, own_ns, processes, tmp_path, count=4, slots=50)
        names = [f"t{i:03d}" for i in range(200)]
        for name in names:
            create_task(
                cluster,
                own_ns,
                name,
                taskType="sleep",
                requiredCapabilities=["echo"],
                payload={"seconds": 5},
            )
        wait_for("150 tasks running", lambda: phases(cluster, own_ns)["Running"] >= 150, timeout=60)
    finally:
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
    in_flight = phases(cluster, own_ns)
    assert in_flight["Running"] >= 150, in_flight
    second = own_operator(cluster, tmp_path / "operator-2.log")
    try:
        wait_for(
            "every task to end", lambda: phases(cluster, own_ns)["Completed"] == 200, timeout=120
        )
    finally:
        stop_operator(second)
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
        for agent in processes.values()
        for match in re.findall(r"task (\S+) attempt \d+: sleeping", agent.logs())
    )
    twice = {
        name: (task_status(cluster, own_ns, name)["attempts"], ran[uid])
        for name, uid in uids.items()
        if ran[uid] != 1
    }
    assert not twice, f"tasks that ran twice, or never: {twice}"


PLUGIN = '''
class LastByName:
    """Chooses the candidate whose agentId sorts last."""

    def select(self, candidates, task):
        return max(candidates, key=lambda c: c.agent_id)
'''


def test_a_strategy_installed_as_an_entry_point_is_used_when_a_task_names_it(
    cluster: Cluster, crds: Any, own_ns: str, processes: dict[str, AgentProcess], tmp_path: Path
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
    operator = own_operator(
        cluster,
        tmp_path / "operator.log",
        {  # the plug-in's site added to the path, not replacing it (where agent_mesh may be)
            "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
            "AGENT_MESH_STATUS_WRITE_SECONDS": "1",
        },
    )
    try:
        workers(cluster, operator, own_ns, processes, tmp_path, count=3)
        names = [f"p{i}" for i in range(4)]
        for name in names:
            create_task(
                cluster,
                own_ns,
                name,
                taskType="echo",
                requiredCapabilities=["echo"],
                strategy="last-by-name",
                payload=name,
            )
        for name in names:
            status = wait_phase(cluster, own_ns, name, {"Completed", "Failed", "TimedOut"})
            assert status["phase"] == "Completed" and status["agentId"] == "w2", status

        # analytics: w2 ran all four; its MeshAgent status counts them
        def counted() -> dict[str, Any] | None:
            status = cluster.custom.get_namespaced_custom_object(
                GROUP, VERSION, own_ns, "meshagents", "w2"
            ).get("status", {})
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
    finally:
        stop_operator(operator)
