"""The local control plane harness: dev up/down, and no orphans when its parent dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent_mesh.devcluster.processes import alive
from tests.support.processes import processes_under
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("KUBECONFIG")),
    reason=(
        "KUBECONFIG is set: these tests start local control planes of their own, whose "
        "binaries `make` does not build when a cluster is given (make binaries)"
    ),
)


def _mesh(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_mesh", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_dev_up_without_a_node_status_kubeconfig_down(tmp_path: Path) -> None:
    env = {**os.environ, "AGENT_MESH_STATE_DIR": str(tmp_path)}
    up = _mesh("dev", "up", "--no-node", env=env)
    assert up.returncode == 0, up.stderr
    kubeconfig = Path(up.stdout.strip())
    assert "ready in" in up.stderr
    try:
        assert _mesh("dev", "kubeconfig", env=env).stdout.strip() == str(kubeconfig)
        status = _mesh("dev", "status", env=env)
        assert "running at https://127.0.0.1:" in status.stdout
        assert "Kubernetes 1." in status.stdout
        assert "no node: control plane only" in status.stdout
        again = _mesh("dev", "up", "--no-node", env=env)
        assert again.returncode == 0 and "already running" in again.stderr
        kubectl = sorted(Path(p) for p in up.stderr.split() if p.endswith("/kubectl"))[0]
        version = subprocess.run(
            [str(kubectl), "--kubeconfig", str(kubeconfig), "version", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        )
        server = json.loads(version.stdout)["serverVersion"]
        assert server["gitVersion"].startswith("v1.") and server["minor"].isdigit()
        assert processes_under(tmp_path), "dev up left nothing running"
    finally:
        down = _mesh("dev", "down", env=env)
    assert down.returncode == 0
    wait_for("dev down to stop etcd and the apiserver", lambda: not processes_under(tmp_path))
    assert _mesh("dev", "kubeconfig", env=env).returncode == 1


_INTERRUPTED_RUN = """
import pathlib, sys
from kubernetes import client, config
from agent_mesh.devcluster import ControlPlane, ensure_binaries
plane = ControlPlane(ensure_binaries(), pathlib.Path(sys.argv[1]))
plane.start()
try:
    print("ready", flush=True)
    sys.stdin.read()
except KeyboardInterrupt:  # a test run's teardown: it needs the cluster
    api = config.new_client_from_config(str(plane.kubeconfig))
    try:
        client.CoreV1Api(api).list_namespace(_request_timeout=10)
        print("the cluster answered the teardown", flush=True)
    except Exception as error:
        print(f"the teardown failed: {error!r}", flush=True)
finally:
    plane.stop()
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as a terminal starts it, even under nohup


def test_ctrl_c_reaches_the_test_run_not_its_control_plane(tmp_path: Path) -> None:
    """Ctrl-C signals the terminal's whole process group. Were etcd and the apiserver in
    it, they would stop at that moment and the run's teardown would hang on them."""
    run = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED_RUN, str(tmp_path / "plane")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the run's own process group, as a terminal gives it
        preexec_fn=_default_sigint,
    )
    try:
        assert run.stdout is not None
        assert run.stdout.readline().strip() == "ready"
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C
        said, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert "the cluster answered the teardown" in said, said
    wait_for("the plane stopped by the run", lambda: not processes_under(tmp_path), timeout=20)


def test_a_killed_test_run_leaves_no_control_plane_behind(tmp_path: Path) -> None:
    script = (
        "import sys, time, pathlib\n"
        "from agent_mesh.devcluster import ControlPlane, ensure_binaries\n"
        "plane = ControlPlane(ensure_binaries(), pathlib.Path(sys.argv[1]))\n"
        "plane.start()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "plane")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "ready"
        children = [pid for pid in processes_under(tmp_path) if pid != parent.pid]
        assert len(children) == 2  # etcd and kube-apiserver
    except BaseException:
        parent.kill()  # its children follow it (the behaviour under test)
        raise
    parent.send_signal(signal.SIGKILL)  # no cleanup code runs
    parent.communicate()  # reaps it and closes its pipes
    wait_for(
        "etcd and the apiserver to die with their parent",
        lambda: not any(alive(pid) for pid in children),
        timeout=20,
    )
