"""The processes of the tasks bench besides the control plane: the operator (as the
tests start it, or through operator_shim.py), and echo_worker agents registered as
external MeshAgents; the CPU time of each."""

from __future__ import annotations

import base64
import os
import re
import ssl
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from common.children import Started, start
from common.harness import Mesh, answers, free_port, local_url, start_echo_worker, wait_until
from common.procfs import cpu_seconds

from .apiserver import GROUP, VERSION, ApiServer

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


@dataclass
class Operator:
    """An operator process of the bench, and where its mesh API listens."""

    process: Started
    mesh_port: int
    ca_file: Path | None = None
    """The CA bundle the operator publishes (its mesh API serves https)."""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> Path:
        return self.process.log

    @property
    def mesh_url(self) -> str:
        return local_url(self.mesh_port, scheme="https")

    def tls(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None

    def stop(self) -> None:
        self.process.stop()


def start_operator(
    api: ApiServer,
    kubeconfig: Path,
    namespace: str,
    operator_ns: str,
    log: Path,
    webhooks: bool,
    shim: dict[str, str] | None = None,
) -> Operator:
    """`python -m agent_mesh operator` watching `namespace`, as tests/conftest.py starts it;
    with `shim`, run by operator_shim.py with those settings (environment) instead."""
    liveness, mesh = free_port(), free_port()
    argv = [sys.executable]
    profile = os.environ.get("AGENT_MESH_BENCH_CPROFILE")
    if profile:
        argv += ["-m", "cProfile", "-o", f"{profile}.{namespace}"]
    argv += [str(SHIM)] if shim else ["-m", "agent_mesh"]
    argv += [
        "operator",
        "--namespace",
        namespace,
        "--liveness-port",
        str(liveness),
        "--mesh-port",
        str(mesh),
        "--operator-namespace",
        operator_ns,
    ]
    argv += ["--webhook-port", str(free_port())] if webhooks else ["--no-webhooks"]
    tmp = log.parent / "tmp"  # the operator's temporary files go with the bench's
    tmp.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "TMPDIR": str(tmp),
        "AGENT_MESH_EGRESS_ALLOW_LOOPBACK": "true",  # the bench's agents are on 127.0.0.1
        **(shim or {}),
    }
    # grace: kopf drains its per-object workers before it exits
    op = Operator(start(f"operator[{namespace}]", argv, log, env, grace=60.0), mesh)

    ca_path = f"/api/v1/namespaces/{operator_ns}/configmaps/agent-mesh-ca.crt"

    def up(url: str, tls: bool = False) -> bool:
        if op.process.exited():
            raise RuntimeError(f"the operator exited:\n{op.process.tail()}")
        if tls:  # the CA bundle the operator publishes, read as tests/conftest.py reads it
            ca_file = log.with_name(f"{log.stem}-ca.crt")
            ca_file.write_text(api.request("GET", ca_path)["data"]["ca.crt"])
            op.ca_file = ca_file
        return answers(url, op.tls())

    wait_until("the operator's liveness endpoint", lambda: up(f"{local_url(liveness)}/healthz"), 90)
    wait_until("the operator's mesh API", lambda: up(f"{op.mesh_url}/readyz", tls=True), 90)
    return op


def register_agent(api: ApiServer, namespace: str, name: str, slots: int) -> tuple[str, str]:
    """An external MeshAgent on a fresh loopback port: (its URL, its credential)."""
    url = local_url(free_port())
    api.ensure(
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/meshagents",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MeshAgent",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "agentType": "worker",
                "capabilities": ["echo"],
                "endpoint": url,
                "maxConcurrentTasks": slots,
            },
        },
    )

    def secret_name() -> str | None:
        got = api.request(
            "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/meshagents/{name}"
        )
        return ((got.get("status") or {}).get("credential") or {}).get("secretName")

    secret = wait_until(f"the credential of {name}", secret_name, 60)
    data = api.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{secret}")["data"]
    return url, base64.b64decode(data["credential"]).decode()


def start_agent(
    op: Operator, namespace: str, name: str, url: str, credential: str, slots: int, logs: Path
) -> Started:
    """examples/echo_worker.py as agent `name` of `namespace`, reaching `op`'s mesh API."""
    mesh = Mesh(op.mesh_url, namespace, credential, str(op.ca_file) if op.ca_file else None)
    return start_echo_worker(mesh, name, url, slots, logs)


def scrape(op: Operator) -> dict[str, float]:
    """The operator's agentmesh_* counters (GET /metrics on the mesh API)."""
    try:
        with urllib.request.urlopen(f"{op.mesh_url}/metrics", timeout=5, context=op.tls()) as r:
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
    operator: Operator | None = None
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
            self.operator.stop()
            self.operator = None
        for agent in self.agents:
            agent.stop()
        self.agents.clear()
