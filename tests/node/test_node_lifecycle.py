"""One node per machine, taken down without a trace: `dev up` refuses loudly while a node
lives, reclaims the leftovers of one killed hard, and `dev down` leaves the host as it was.

These run after every other node test (they stop the session's shared node)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.node.conftest import NodeHolder
from tests.support.processes import idle_process
from tests.support.waiting import wait_for

pytestmark = pytest.mark.node_lifecycle


def _mesh(
    *args: str, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_mesh", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_dev_up_fails_loudly_while_another_node_runs(
    node_holder: NodeHolder, tmp_path: Path
) -> None:
    node_holder.ensure()
    env = {**os.environ, "AGENT_MESH_STATE_DIR": str(tmp_path)}
    up = _mesh("dev", "up", env=env)
    assert up.returncode == 1, up.stderr
    assert "a node is already running on this machine" in up.stderr
    assert "not by `dev up`" in up.stderr
    down = _mesh("dev", "down", env=env)  # not dev up's node: not ours to stop
    assert down.returncode == 0
    assert "`agent-mesh dev down` leaves it running" in down.stderr
    assert node_holder.node is not None and node_holder.node.plane.running()


_HARD_KILLED_NODE = """
import pathlib, sys
from agent_mesh.devcluster import ensure_binaries
from agent_mesh.devcluster import node as devnode
node = devnode.prepare(ensure_binaries(), pathlib.Path(sys.argv[1]))
node.start()
image = node.images[0].name
node.kubectl("run", "sleeper", f"--image={image}", "--image-pull-policy=Never",
             "--command", "--", "sleep", "3600")
node.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=90s")
print("ready", flush=True)
sys.stdin.read()  # until the test kills it (or dies)
"""


def test_dev_up_reclaims_a_node_killed_hard_and_dev_down_leaves_nothing(
    node_holder: NodeHolder, tmp_path: Path
) -> None:
    from agent_mesh.devcluster import hoststate, network
    from agent_mesh.devcluster import node as devnode

    node_holder.ensure()  # the baseline (sysctls, paths) is from before the first node
    node_holder.stop()
    sysctls_before, paths_before = node_holder.sysctls_before, node_holder.paths_before
    assert devnode.leftovers(preexisting=paths_before) == []

    # A node whose owner is SIGKILLed with a pod running: the pod, its shim, mounts and
    # cgroups, the bridge and the rules stay behind.
    owner = subprocess.Popen(
        [sys.executable, "-c", _HARD_KILLED_NODE, str(tmp_path / "killed")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "ready"
    except BaseException:
        owner.kill()
        raise
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    owner.communicate()  # closes its pipes
    assert network.link_exists(network.BRIDGE), "the killed node left no bridge to reclaim"
    assert hoststate.node_cgroups(), "the killed node left no pod behind to reclaim"

    env = {**os.environ, "AGENT_MESH_STATE_DIR": str(tmp_path / "state")}
    up = _mesh("dev", "up", env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert "reclaiming the leftovers of a node that was stopped hard" in up.stderr
        status = _mesh("dev", "status", env=env)
        assert "node agent-mesh-node Ready" in status.stdout, status.stdout + status.stderr
        assert "started by dev up" in status.stdout
    finally:
        down = _mesh("dev", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert "node removed, host restored" in down.stderr

    assert devnode.leftovers(preexisting=paths_before) == []
    assert network.read_sysctls() == sysctls_before
    assert hoststate.processes_of(_node_binaries()) == []
    assert hoststate.node_cgroups() == []
    wait_for("no veth left", lambda: not _veths(), timeout=10)


def _node_binaries() -> list[Path]:
    from agent_mesh.devcluster.binaries import cached_node_binaries

    return cached_node_binaries()


def _veths() -> list[str]:
    listed = ["ip", "-o", "link", "show", "type", "veth"]
    return subprocess.run(listed, capture_output=True, text=True, check=False).stdout.splitlines()


def test_dev_up_reclaims_a_test_runs_node_whose_owner_died(
    node_holder: NodeHolder, tmp_path: Path
) -> None:
    """The session's node, its record then naming an owner that has died (its pid and
    start time are a finished process's) while every process of the node still runs: `dev
    up` stops those processes itself and starts its own node."""
    from agent_mesh.devcluster import hoststate, processes
    from agent_mesh.devcluster import node as devnode

    node_holder.ensure()
    record = devnode.Record.load(devnode.node_dir())
    assert record is not None and record.live_components() and not record.detached
    assert not record.orphaned()  # its owner, this test run, lives
    with idle_process() as owner:
        started = processes.start_time(owner.pid)
    record.owner_pid, record.owner_start_time = owner.pid, started
    record.save()
    assert record.orphaned()

    env = {**os.environ, "AGENT_MESH_STATE_DIR": str(tmp_path / "state")}
    up = _mesh("dev", "up", env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert "outlived its owner" in up.stderr, up.stderr
        assert "stopped the processes of a node whose owner died: kubelet" in up.stderr
        status = _mesh("dev", "status", env=env)
        assert "node agent-mesh-node Ready" in status.stdout, status.stdout + status.stderr
        assert "started by dev up" in status.stdout
    finally:
        down = _mesh("dev", "down", env=env)
    assert down.returncode == 0, down.stderr
    node_holder.stop()  # its processes are gone: nothing is left to stop
    assert devnode.leftovers(preexisting=node_holder.paths_before) == []
    assert hoststate.processes_of(_node_binaries()) == []
