"""MeshTasks end to end: the real apiserver, the operator process, agent processes from
examples/ on 127.0.0.1. A task applied with kubectl comes back Completed with its result."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.devcluster.ports import free_port
from agent_mesh.testing import OperatorProcess, credential_of
from tests.support.agents import AgentProcess, launch, register, start_worker, worker_pair
from tests.support.cluster import Cluster
from tests.support.tasks import (
    create_task,
    create_tasks,
    fails_over,
    healthy,
    task_status,
    wait_phase,
)
from tests.support.waiting import wait_for


@pytest.mark.smoke
def test_a_task_applied_with_kubectl_completes_with_its_result(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    agents: dict[str, AgentProcess],
    tmp_path: Path,
) -> None:
    start_worker(cluster, operator, ns, agents, tmp_path, "echo-1", ["echo"])
    create_task(
        cluster, ns, "hello", taskType="echo", requiredCapabilities=["echo"], payload={"x": 1}
    )
    status = wait_phase(cluster, ns, "hello", {"Completed", "Failed", "TimedOut"})
    assert status["phase"] == "Completed", status
    assert status["result"] == {"x": 1}
    assert status["agentId"] == "echo-1"
    assert status["attempt"] == 1
    assert [a["outcome"] for a in status["attempts"]] == ["Succeeded"]
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "True"
    table = cluster.kubectl("get", "meshtasks", "-n", ns).stdout
    assert "hello" in table and "Completed" in table and "echo-1" in table


def agent_of_each(cluster: Cluster, ns: str, names: list[str]) -> dict[str, str]:
    return {n: str(task_status(cluster, ns, n).get("agentId")) for n in names}


def finish_all(cluster: Cluster, ns: str, names: list[str], timeout: float = 90) -> None:
    for name in names:
        status = wait_phase(cluster, ns, name, {"Completed", "Failed", "TimedOut"}, timeout)
        assert status["phase"] == "Completed", (name, status)


def test_each_strategy_distributes_as_specified(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    agents: dict[str, AgentProcess],
    tmp_path: Path,
) -> None:
    for i in range(3):
        start_worker(cluster, operator, ns, agents, tmp_path, f"w{i}", ["echo"])
    start_worker(cluster, operator, ns, agents, tmp_path, "wide", ["echo", "extra", "more"])
    wait_for("4 healthy workers", lambda: healthy(cluster, ns) >= 4)

    # round-robin: 8 tasks over 4 agents, 2 each
    spread = Counter(echo_tasks(cluster, ns, "rr", 8, "round-robin").values())
    assert sorted(spread.values()) == [2, 2, 2, 2], spread

    # capability-match: the agents holding exactly [echo] win over `wide`
    assert "wide" not in echo_tasks(cluster, ns, "cm", 6, "capability-match").values()

    # least-loaded: with w0 busy on long tasks pinned to it, new work avoids it
    busy = [f"busy-{i}" for i in range(3)]
    create_tasks(
        cluster,
        ns,
        busy,
        taskType="sleep",
        payload={"seconds": 8},
        agentSelector={"agentRef": "w0"},
    )
    wait_for(
        "w0 to be busy",
        lambda: all(task_status(cluster, ns, n).get("phase") == "Running" for n in busy),
    )
    assert "w0" not in echo_tasks(cluster, ns, "ll", 6, "least-loaded").values()

    # random: 30 tasks reach every one of the 4 agents (a miss has odds below 1e-3)
    reached = set(echo_tasks(cluster, ns, "rnd", 30, "random").values())
    assert reached == {"w0", "w1", "w2", "wide"}


def echo_tasks(cluster: Cluster, ns: str, prefix: str, count: int, strategy: str) -> dict[str, str]:
    """Create `count` echo tasks routed by `strategy`, wait for them all to complete;
    which agent ran each."""
    names = [f"{prefix}-{i}" for i in range(count)]
    create_tasks(
        cluster, ns, names, taskType="echo", requiredCapabilities=["echo"], strategy=strategy
    )
    finish_all(cluster, ns, names)
    return agent_of_each(cluster, ns, names)


def test_critical_tasks_start_before_earlier_low_ones_when_agents_are_saturated(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    agents: dict[str, AgentProcess],
    tmp_path: Path,
) -> None:
    url, credential = register(cluster, ns, "solo", "worker", ["echo"])
    cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "meshagents", "solo", {"spec": {"maxConcurrentTasks": 1}}
    )
    agents["solo"] = launch("echo_worker.py", operator, ns, "solo", url, credential, tmp_path)
    agents["solo"].wait_ready()
    wait_for("solo healthy", lambda: healthy(cluster, ns) == 1)
    create_task(
        cluster,
        ns,
        "blocker",
        taskType="sleep",
        requiredCapabilities=["echo"],
        payload={"seconds": 3},
    )
    wait_phase(cluster, ns, "blocker", {"Running"})
    low = [f"low-{i}" for i in range(2)]
    critical = [f"critical-{i}" for i in range(2)]
    for names, priority in ((low, "low"), (critical, "critical")):  # the low ones first
        create_tasks(
            cluster,
            ns,
            names,
            taskType="sleep",
            requiredCapabilities=["echo"],
            priority=priority,
            payload={"seconds": 1},
        )
    finish_all(cluster, ns, ["blocker", *low, *critical], timeout=60)
    started = {n: task_status(cluster, ns, n)["attempts"][-1]["startedAt"] for n in low + critical}
    assert max(started[n] for n in critical) < min(started[n] for n in low), started


def test_a_task_no_agent_can_serve_waits_naming_the_capability_then_runs(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    agents: dict[str, AgentProcess],
    tmp_path: Path,
) -> None:
    names = ["klingon", "klingon-2", "klingon-3"]
    create_tasks(
        cluster,
        ns,
        names,
        taskType="echo",
        requiredCapabilities=["translate-tlh"],
        payload="Qapla'",
    )

    def waiting(name: str) -> dict[str, Any] | None:
        status = task_status(cluster, ns, name)
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        assigned = conditions.get("Assigned")
        return assigned if assigned and assigned["reason"] == "NoCapableAgent" else None

    for name in names:  # every waiting task says why, not only the head of the queue
        assigned = wait_for(f"the NoCapableAgent condition on {name}", lambda n=name: waiting(n))
        assert "translate-tlh" in assigned["message"]
        assert task_status(cluster, ns, name)["phase"] == "Pending"
    start_worker(cluster, operator, ns, agents, tmp_path, "linguist", ["translate-tlh"])
    for name in names:
        status = wait_phase(cluster, ns, name, {"Completed"})
        assert status["result"] == "Qapla'" and status["agentId"] == "linguist"


def test_kubectl_apply_samples_then_the_sample_task_completes(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    agents: dict[str, AgentProcess],
    tmp_path: Path,
) -> None:
    samples = Path(__file__).resolve().parents[2] / "config" / "samples"
    cluster.kubectl("apply", "-n", ns, "-f", str(samples))
    for name in ("worker-1", "worker-2"):  # the sample workers run as local processes
        port = free_port()
        cluster.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            "meshagents",
            name,
            {"spec": {"endpoint": f"http://127.0.0.1:{port}"}},
        )
        credential = credential_of(cluster, ns, name)
        agents[name] = launch(
            "summarizer.py", operator, ns, name, f"http://127.0.0.1:{port}", credential, tmp_path
        )
    for agent in agents.values():
        agent.wait_ready()
    status = wait_phase(cluster, ns, "summarize-release-notes", {"Completed"})
    assert status["result"] == ["agent-mesh turns a cluster into a mesh of cooperating AI agents."]
    table = cluster.kubectl("get", "meshtasks", "-n", ns).stdout
    assert "summarize-release-notes" in table and "Completed" in table


def test_a_task_whose_agent_is_deleted_mid_task_fails_over_without_using_a_retry(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    agents: dict[str, AgentProcess],
    tmp_path: Path,
) -> None:
    """`kubectl delete meshagent` while the agent holds a task: the task goes to another
    agent at once (not at its timeout), using no retry."""
    worker_pair(cluster, operator, ns, agents, tmp_path)
    status = fails_over(
        cluster,
        ns,
        "orphan",
        lambda deleted: cluster.kubectl("delete", "meshagent", deleted, "-n", ns),
        timeoutSeconds=120,  # far beyond the failover: the timeout must not move it
        payload={"seconds": 5},
    )
    assert "was deleted" in status["attempts"][0]["error"], status
