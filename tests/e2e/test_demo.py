"""README command one in its process mode: `make demo` (here `agent-mesh demo --once
--processes`, which a machine without a node uses on its own): with no cluster it starts
the local control plane; with KUBECONFIG set it runs on that cluster, as `make demo` does
there. The chart mode is tested on the node (tests/node/test_demo_chart.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agent_mesh.testing.demo import NAMESPACE
from tests.support.processes import processes_under

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.smoke
def test_demo_brings_up_a_mesh_prints_the_agents_and_cleans_up(tmp_path: Path) -> None:
    env = {**os.environ, "AGENT_MESH_STATE_DIR": str(tmp_path)}
    given = bool(os.environ.get("KUBECONFIG"))
    if given:
        held = subprocess.run(
            ["kubectl", "get", "namespace", NAMESPACE],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if held.returncode == 0:
            pytest.skip(
                f"namespace {NAMESPACE} exists in the KUBECONFIG cluster: the demo applies "
                "its samples there and deletes it when done, so it would destroy what is in it"
            )
        # the session's operator registered the default webhook configuration on this
        # cluster; the demo's operator registers (and removes when it stops) one of its own
        env["AGENT_MESH_WEBHOOK_CONFIGURATION"] = f"demo-{uuid.uuid4().hex[:6]}.agentmesh.io"
    proc = subprocess.run(
        [sys.executable, "-m", "agent_mesh", "demo", "--once", "--processes"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "--processes: the operator and the agents run as processes" in proc.stderr
    agents_table, tasks_table, policies_table = (
        [line for line in block.splitlines() if line.strip()]
        for block in proc.stdout.split("\n\n")[:3]
    )
    header = agents_table[0].split()
    assert header[:4] == ["NAME", "TYPE", "HEALTH", "ACTIVE"]
    assert "ENDPOINT" in header  # -o wide
    agents = {line.split()[0]: line for line in agents_table[1:]}
    for name in ("worker-1", "worker-2", "monitor", "critic"):  # run by examples/
        assert " healthy " in agents[name], proc.stdout
    for name in ("orchestrator", "researcher"):  # no program plays them
        assert " pending " in agents[name], proc.stdout
    (task,) = tasks_table[1:]
    assert task.split()[0] == "summarize-release-notes" and " Completed " in task, proc.stdout
    assert {line.split()[0] for line in policies_table[1:]} == {"critic", "researcher"}
    if given:
        assert "using the cluster in KUBECONFIG" in proc.stderr
    else:
        assert "control plane ready in" in proc.stderr
    assert not processes_under(tmp_path), "the demo left processes running"
