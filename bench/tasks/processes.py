"""The processes of the tasks bench besides the control plane: the operator (started by
agent_mesh.testing as the tests start it, or through operator_shim.py), and echo_worker
agents registered as external MeshAgents; the CPU time of each."""

from __future__ import annotations

import os
import re
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from agent_mesh import testing
from agent_mesh.testing import OperatorProcess
from common.children import Started, forget, on_stop
from common.harness import Mesh, start_echo_worker
from common.procfs import cpu_seconds

from .apiserver import ApiServer

SHIM = Path(__file__).with_name("operator_shim.py")


def child_running(binary: Path) -> int | None:
    """The pid of our child process that executes `binary` (the plane's components)."""
    from agent_mesh.devcluster.processes import runs_binary

    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == me and runs_binary(int(entry.name), binary):
            return int(entry.name)
    return None


def start_operator(
    api: ApiServer,
    kubeconfig: Path,
    namespace: str,
    operator_ns: str,
    log: Path,
    webhooks: bool,
    shim: dict[str, str] | None = None,
) -> OperatorProcess:
    """`python -m agent_mesh operator` watching `namespace`, as tests/support/operators.py
    starts it; with `shim`, run by operator_shim.py with those settings (environment) instead."""
    command = [sys.executable]
    profile = os.environ.get("AGENT_MESH_BENCH_CPROFILE")
    if profile:
        command += ["-m", "cProfile", "-o", f"{profile}.{namespace}"]
    command += [str(SHIM)] if shim else ["-m", "agent_mesh"]
    tmp = log.parent / "tmp"  # the operator's temporary files go with the bench's
    tmp.mkdir(exist_ok=True)
    op = testing.start_operator(
        api,
        kubeconfig,
        log,
        watch=namespace,
        operator_namespace=operator_ns,
        webhooks=webhooks,
        extra_env={"TMPDIR": str(tmp), **(shim or {})},
        command=command,
        timeout=90,
        stop_grace=60.0,  # kopf drains its per-object workers before it exits
    )
    on_stop(op.stop)
    return op


def register_agent(api: ApiServer, namespace: str, name: str, slots: int) -> tuple[str, str]:
    """An external MeshAgent on a fresh loopback port: (its URL, its credential)."""
    agent = testing.register_external_agent(
        api, namespace, name, "worker", capabilities=["echo"], maxConcurrentTasks=slots, timeout=60
    )
    return agent.url, agent.credential


def start_agent(
    op: OperatorProcess,
    namespace: str,
    name: str,
    url: str,
    credential: str,
    slots: int,
    logs: Path,
) -> Started:
    """examples/echo_worker.py as agent `name` of `namespace`, reaching `op`'s mesh API."""
    mesh = Mesh(op.mesh_url, namespace, credential, str(op.ca_file) if op.ca_file else None)
    return start_echo_worker(mesh, name, url, slots, logs)


def scrape(op: OperatorProcess) -> dict[str, float]:
    """The operator's agentmesh_* counters (GET /metrics on the mesh API)."""
    try:
        with urllib.request.urlopen(f"{op.mesh_url}/metrics", timeout=5, context=op.tls) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(agentmesh_[a-z_]+?(?:_total)?(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if m and not m.group(1).split("{")[0].endswith(("_bucket", "_created")):
            out[m.group(1)] = float(m.group(2))
    return out


@dataclass
class Fleet:
    """The processes whose CPU time a run reports."""

    apiserver: int
    etcd: int
    operator: OperatorProcess | None = None
    agents: list[Started] = field(default_factory=list)

    def cpu(self) -> dict[str, float]:
        out = {"kube-apiserver": cpu_seconds(self.apiserver), "etcd": cpu_seconds(self.etcd)}
        if self.operator is not None:
            out["operator"] = cpu_seconds(self.operator.pid)
        if self.agents:
            out["agents"] = cpu_seconds(*(a.pid for a in self.agents))
        return out

    def stop(self) -> None:
        """Stop the operator and the agents (the control plane stays)."""
        if self.operator is not None:
            forget(self.operator.stop)
            self.operator.stop()
            self.operator = None
        for agent in self.agents:
            agent.stop()
        self.agents.clear()
