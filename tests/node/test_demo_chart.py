"""README command one on a machine that runs the node: `make demo` installs the operator
with the Helm chart and runs the example agents as pods; it leaves nothing behind, after
--once and after Ctrl-C (a real SIGINT to its process group).

The demo starts the machine's one node itself, so the session's shared node is stopped
first (these tests run with the lifecycle tests, after every other node test)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent_mesh.devcluster import node as devnode
from tests.node.conftest import NodeHolder
from tests.support.processes import processes_under
from tests.support.venvs import ROOT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.node_lifecycle


@pytest.fixture
def machine_node_free(node_holder: NodeHolder) -> None:
    reason = devnode.unsupported_reason()
    if reason:
        pytest.skip(f"no node on this machine: {reason}")
    node_holder.stop()


def _demo(state: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "AGENT_MESH_STATE_DIR": str(state)}
    env.pop("AGENT_MESH_DEMO_PROCESSES", None)
    return subprocess.Popen(
        [sys.executable, "-m", "agent_mesh", "demo", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a command
        # as a terminal starts it: SIGINT at its default even when this run was started in
        # the background (a shell's `&` and nohup make children ignore SIGINT and SIGHUP)
        preexec_fn=_default_signals,
    )


def _default_signals() -> None:
    for number in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(number, signal.SIG_DFL)


def _assert_nothing_left(state: Path) -> None:
    assert devnode.leftovers() == [], "the demo left part of the node behind"
    assert not devnode._stray_processes(), "the demo left node processes running"
    assert not processes_under(state), "the demo left processes running"


def test_demo_once_installs_the_chart_runs_the_agents_as_pods_and_leaves_nothing(
    machine_node_free: None, tmp_path: Path
) -> None:
    proc = _demo(tmp_path, "--once")
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-4000:]
    assert "chart mode" in stderr and "helm upgrade --install agent-mesh" in stderr, stderr
    agents, tasks, pods = (  # `kubectl get meshagents,meshtasks`, then the pods
        [line.split() for line in block.splitlines() if line.strip()]
        for block in stdout.split("\n\n")[:3]
    )
    health = {row[0].split("/")[-1]: row[2] for row in agents[1:]}
    for name in ("worker-1", "worker-2", "critic", "monitor"):
        assert health[name] == "healthy", stdout
    assert [(t[0].split("/")[-1], t[3]) for t in tasks[1:]] == [
        ("summarize-release-notes", "Completed")
    ], stdout
    running = {row[0]: (row[2], row[6]) for row in pods[1:]}
    assert running == {
        f"{name}-0": ("Running", devnode.NODE_NAME)
        for name in ("critic", "monitor", "worker-1", "worker-2")
    }, stdout
    assert "helm uninstall" in stderr and "stopping the node" in stderr, stderr
    _assert_nothing_left(tmp_path)


@pytest.mark.parametrize(
    "moment",
    ["the mesh is up", "waiting for the agents' pods", "helm upgrade --install"],
    ids=["mesh-up", "while-the-pods-start", "during-helm-install"],
)
def test_ctrl_c_on_the_demo_uninstalls_and_leaves_nothing(
    machine_node_free: None, tmp_path: Path, moment: str
) -> None:
    proc = _demo(tmp_path)
    lines: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
    reader.start()

    def reached() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with {proc.returncode}:\n{''.join(lines)[-4000:]}")
        return any(moment in line for line in lines)

    try:
        wait_for(f"the demo to print {moment!r}", reached, timeout=600, interval=0.2)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in its terminal
    code = proc.wait(timeout=300)
    reader.join(timeout=10)
    said = "".join(lines)
    # mid-step, the SIGINT also ends the kubectl the demo waits on: an error, not 130
    assert code in (0, 1, 130), said[-4000:]
    assert "helm uninstall" in said and "stopping the node" in said, said[-4000:]
    _assert_nothing_left(tmp_path)


def test_demo_on_a_kubeconfig_cluster_with_an_image_it_can_pull_uses_the_chart(
    node_holder: NodeHolder, tmp_path: Path
) -> None:
    """KUBECONFIG names a cluster with nodes (here the node's) and --image an image it
    has: the chart mode, cleaning up the release and the namespaces (the CRDs stay, as
    Helm keeps them); without --image it is the process mode, saying why, and its
    operator runs without the webhook the apiserver could not call."""
    node_cluster = node_holder.ensure()  # (again: the tests above stopped it)
    env = {**os.environ, "AGENT_MESH_STATE_DIR": str(tmp_path)}
    env["KUBECONFIG"] = str(node_cluster.kubeconfig)
    proc = subprocess.run(
        [sys.executable, "-m", "agent_mesh", "demo", "--once", "--image", node_cluster.image],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "chart mode on the cluster in KUBECONFIG" in proc.stderr, proc.stderr
    assert " Completed " in proc.stdout, proc.stdout
    left = node_cluster.kubectl(
        "get", "namespaces", "agent-mesh-demo", "agent-mesh-system", "--ignore-not-found",
        "-o", "name",
    )  # fmt: skip
    assert not left.stdout.strip(), left.stdout
    assert node_cluster.kubectl("get", "crd", "meshtasks.agentmesh.io").returncode == 0

    proc = subprocess.run(
        [sys.executable, "-m", "agent_mesh", "demo", "--once"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "process mode (the operator and agents as processes here): the cluster in " in (
        proc.stderr
    ), proc.stderr
    assert "the operator runs without its admission webhook: " in proc.stderr, proc.stderr
    assert " Completed " in proc.stdout, proc.stdout
    assert not processes_under(tmp_path), "the demo left processes running"
