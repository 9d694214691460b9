"""`agent-mesh submit`, `agents` and `tasks` as a user runs them: the command in its own
process against the real apiserver, the operator and an echo agent on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.commands import EXIT_FAILED, EXIT_STILL_RUNNING, EXIT_TIMED_OUT
from agent_mesh.testing import AgentProcess, OperatorProcess
from tests.support.agents import launch, register
from tests.support.cluster import Cluster
from tests.support.waiting import wait_for


def agent_mesh(
    cluster: Cluster, *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_mesh", *args],
        env={**cluster.env, "PYTHONPATH": ":".join(sys.path)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def submit(
    cluster: Cluster, namespace: str, task_type: str, *flags: str
) -> subprocess.CompletedProcess[str]:
    """`agent-mesh submit -n <namespace> -t <task_type> <flags>`."""
    return agent_mesh(cluster, "submit", "-n", namespace, "-t", task_type, *flags)


@pytest.fixture
def echo(
    cluster: Cluster, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> Iterator[AgentProcess]:
    url, credential = register(cluster, namespace, "echo-1", "worker", ["echo"])
    agent = launch("echo_worker.py", operator, namespace, "echo-1", url, credential, tmp_path)
    try:
        agent.wait_ready(60)

        def healthy() -> bool:
            body = cluster.read_meshagent(namespace, "echo-1") or {}
            return (body.get("status") or {}).get("healthStatus") == "healthy"

        wait_for("echo-1 to be healthy", healthy)
        yield agent
    finally:
        agent.stop(5)


def test_submit_prints_the_result_of_a_completed_task_and_exits_0(
    cluster: Cluster, namespace: str, echo: AgentProcess
) -> None:
    done = submit(
        cluster,
        namespace,
        "echo",
        "-c",
        "echo",
        "--payload",
        '{"text": "hello"}',
        "--name",
        "greet",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"text": "hello"}
    assert f"meshtask/greet -n {namespace} created" in done.stderr
    assert "Completed on agent echo-1 (attempt 1)" in done.stderr  # progress on stderr
    task = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshtasks", "greet"
    )
    assert task["spec"]["requiredCapabilities"] == ["echo"]


def test_submit_exits_with_the_code_of_a_failed_or_timed_out_task(
    cluster: Cluster, namespace: str, echo: AgentProcess
) -> None:
    failed = submit(
        cluster, namespace, "no-such-handler", "-c", "echo", "--retries", "0", "--name", "fails"
    )
    assert failed.returncode == EXIT_FAILED, failed.stderr
    assert failed.stdout == ""
    assert "meshtask/fails: Failed on agent echo-1 (attempt 1) - " in failed.stderr
    timed_out = submit(
        cluster,
        namespace,
        "sleep",
        "-c",
        "echo",
        "--retries",
        "0",
        "--timeout-seconds",
        "1",
        "--payload",
        '{"seconds": 30}',
        "-q",
    )
    assert timed_out.returncode == EXIT_TIMED_OUT, timed_out.stderr
    assert "TimedOut" in timed_out.stderr
    assert "created" not in timed_out.stderr  # --quiet: no progress lines


def test_submit_gives_up_waiting_but_leaves_the_task_running(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    waiting = submit(
        cluster,
        namespace,
        "echo",
        "-c",
        "nobody-has-this",
        "--name",
        "orphan",
        "--wait-timeout",
        "2",
    )
    assert waiting.returncode == EXIT_STILL_RUNNING, waiting.stderr
    assert "Pending - NoCapableAgent" in waiting.stderr
    assert "still Pending after --wait-timeout 2 s; it keeps running" in waiting.stderr
    no_wait = submit(cluster, namespace, "echo", "--no-wait")
    assert no_wait.returncode == 0 and no_wait.stdout.startswith("meshtask/echo-")


def test_submit_refusals_name_the_field(cluster: Cluster, namespace: str) -> None:
    refused = submit(cluster, namespace, "echo", "--retries", "99")
    assert refused.returncode == 2
    assert "spec.retries: Input should be less than or equal to 20 (--retries)" in refused.stderr
    # The apiserver's own refusal (here: a namespace that does not exist) is one line too.
    missing = submit(cluster, "amt-no-such-namespace", "echo")
    assert missing.returncode == 1
    assert "creating a MeshTask in namespace amt-no-such-namespace:" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_agents_and_tasks_list_what_the_cluster_holds(
    cluster: Cluster, namespace: str, echo: AgentProcess
) -> None:
    assert submit(cluster, namespace, "echo", "-c", "echo", "-q").returncode == 0
    listed = agent_mesh(cluster, "agents", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "TYPE", "HEALTH", "ACTIVE", "CAPABILITIES", "ENDPOINT"]
    assert row.split()[:5] == ["echo-1", "worker", "healthy", "0", "echo"]
    assert row.split()[5] == echo.url or row.split()[5].startswith("http")
    none = agent_mesh(cluster, "agents", "-n", namespace, "-c", "echo", "-c", "translate")
    assert none.stdout.strip() == f"No agents found in namespace {namespace}."
    everywhere = agent_mesh(cluster, "agents", "-A", "--type", "worker", "-o", "json")
    names = {
        (a["metadata"]["namespace"], a["metadata"]["name"]) for a in json.loads(everywhere.stdout)
    }
    assert (namespace, "echo-1") in names

    tasks = agent_mesh(cluster, "tasks", "-n", namespace, "--phase", "Completed")
    assert tasks.returncode == 0, tasks.stderr
    lines = tasks.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "PHASE", "AGENT", "ATTEMPT", "AGE"]
    assert lines[1].split()[1:5] == ["echo", "Completed", "echo-1", "1"]
    assert agent_mesh(cluster, "tasks", "-n", namespace, "--phase", "Failed").stdout.startswith(
        "No tasks"
    )
