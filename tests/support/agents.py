"""Agent fleets for tests: the programs in examples/ (or tests/programs/), run as real
processes serving HTTP on 127.0.0.1, each registered as an external MeshAgent with its
own credential (agent_mesh.testing, with the tests' short intervals); and `Mesh`, a fleet
with the namespace and operator it runs under, for the test to call through."""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent_mesh import testing
from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.sdk import MeshClient
from agent_mesh.testing import AgentProcess, OperatorProcess
from agent_mesh.transport.client import TransportConfig
from tests.support.cluster import Cluster
from tests.support.mesh_api import external_agent, token_for_agent, token_of, token_source
from tests.support.namespaces import TEST_NAMESPACE_PREFIX, fresh_namespace
from tests.support.tasks import healthy
from tests.support.waiting import wait_for

__all__ = [
    "PROGRAMS",
    "AgentProcess",
    "Mesh",
    "Plan",
    "fleet",
    "launch",
    "mesh_fixture",
    "register",
    "running_mesh",
    "start_worker",
    "worker_pair",
    "workers",
]

PROGRAMS = Path(__file__).resolve().parents[1] / "programs"
"""Agent programs written for tests (e.g. recorder.py, which shows what it was sent)."""

SETTINGS = {
    "AGENT_MESH_HEARTBEAT_SECONDS": "5",
    "AGENT_MESH_POLICY_SYNC_SECONDS": "1",
    "AGENT_MESH_DRAIN_SECONDS": "1",
    "AGENT_MESH_LOG_FORMAT": "text",
}

Plan = list[
    tuple[str | Path, str, str, list[str]] | tuple[str | Path, str, str, list[str], dict[str, str]]
]
"""Agents to run: (example, agent_id, agent_type, capabilities[, more AGENT_MESH_*
settings or the program's own variables]) each."""


def register(
    cluster: Cluster, namespace: str, agent_id: str, agent_type: str, capabilities: list[str]
) -> tuple[str, str]:
    """A MeshAgent reached at a fresh loopback port; (its URL, its credential)."""
    agent = testing.register_external_agent(
        cluster, namespace, agent_id, agent_type, capabilities=capabilities
    )
    return agent.url, agent.credential


def launch(
    example: str | Path,
    operator: OperatorProcess,
    namespace: str,
    agent_id: str,
    url: str,
    credential: str,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    python: Sequence[str] = (sys.executable,),
) -> AgentProcess:
    """Start examples/`example` (or the program at path `example`) as agent `agent_id`
    (not waiting for it), run by `python` (the interpreter and its options; default: the
    tests' own)."""
    return testing.launch_agent(
        example,
        mesh_url=operator.mesh_url,
        ca_file=operator.ca_file,
        namespace=namespace,
        agent_id=agent_id,
        credential=credential,
        url=url,
        log=log_dir / f"{agent_id}.log",
        settings={**SETTINGS, **(extra_env or {})},
        python=python,
    )


@contextlib.contextmanager
def fleet(
    cluster: Cluster,
    operator: OperatorProcess,
    namespace: str,
    plan: Plan,
    log_dir: Path,
) -> Iterator[dict[str, AgentProcess]]:
    """The agents of `plan`, registered in `namespace` and ready, by agent_id; stopped
    when the block ends."""
    agents: dict[str, AgentProcess] = {}
    try:
        for example, agent_id, agent_type, capabilities, *settings in plan:
            url, credential = register(cluster, namespace, agent_id, agent_type, capabilities)
            env = settings[0] if settings else None
            agents[agent_id] = launch(
                example, operator, namespace, agent_id, url, credential, log_dir, env
            )
        for agent in agents.values():
            agent.wait_ready()
        yield agents
    finally:
        for agent in agents.values():
            agent.stop()


@dataclass
class Mesh:
    """A namespace, the agents running in it and the operator they answer to."""

    namespace: str
    agents: dict[str, AgentProcess]
    operator: OperatorProcess
    cluster: Cluster

    def client(
        self, agent_type: str, agent_id: str | None = None, config: TransportConfig | None = None
    ) -> MeshClient:
        """A MeshClient in the test process, as a new external agent of `agent_type`
        (named `agent_id`, default `<agent_type>-<random>`)."""
        agent_id = agent_id or f"{agent_type}-{uuid.uuid4().hex[:6]}"
        credential = external_agent(self.cluster, self.namespace, agent_id, agent_type)
        tokens = token_source(self.operator, self.namespace, agent_id, credential)
        return MeshClient(tokens, config=config)

    def token(self, agent_type: str, agent_id: str | None = None) -> str:
        """A new external agent's mesh-API token."""
        agent_id = agent_id or f"{agent_type}-{uuid.uuid4().hex[:6]}"
        return token_of(self.cluster, self.operator, self.namespace, agent_id, agent_type)

    def token_for(self, agent_id: str, agent_type: str, *, to: str) -> str:
        """A new agent's token for calling agent `to` (exchanged, as MeshClient does)."""
        return token_for_agent(self.operator, self.token(agent_type, agent_id), self.namespace, to)


@contextlib.contextmanager
def running_mesh(
    cluster: Cluster, operator: OperatorProcess, namespace: str, plan: Plan, log_dir: Path
) -> Iterator[Mesh]:
    """The fleet of `plan` in `namespace`, as a Mesh; stopped when the block ends."""
    with fleet(cluster, operator, namespace, plan, log_dir) as agents:
        yield Mesh(namespace, agents, operator, cluster)


def start_worker(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    running: dict[str, AgentProcess],
    log_dir: Path,
    agent_id: str,
    capabilities: list[str],
    settings: dict[str, str] | None = None,
) -> AgentProcess:
    """An echo worker `agent_id` (examples/echo_worker.py, with more AGENT_MESH_*
    `settings`), ready, added to `running`."""
    url, credential = register(cluster, ns, agent_id, "worker", capabilities)
    agent = launch("echo_worker.py", operator, ns, agent_id, url, credential, log_dir, settings)
    running[agent_id] = agent
    agent.wait_ready()
    return agent


def worker_pair(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    running: dict[str, AgentProcess],
    log_dir: Path,
    settings: dict[str, str] | None = None,
) -> None:
    """Echo workers "first" and "second" (start_worker), both healthy before anything is
    asked of them: the pair tasks.fails_over strikes one of."""
    for agent_id in ("first", "second"):
        start_worker(cluster, operator, ns, running, log_dir, agent_id, ["echo"], settings)
    wait_for("both agents healthy", lambda: healthy(cluster, ns) == 2)


def workers(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    running: dict[str, AgentProcess],
    log_dir: Path,
    count: int,
    slots: int = 10,
) -> None:
    """`count` echo workers w0, w1, ... taking `slots` tasks at once each, ready and healthy."""
    for i in range(count):
        agent_id = f"w{i}"
        url, credential = register(cluster, ns, agent_id, "worker", ["echo"])
        cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "meshagents", agent_id, {"spec": {"maxConcurrentTasks": slots}}
        )
        running[agent_id] = launch(
            "echo_worker.py", operator, ns, agent_id, url, credential, log_dir
        )
    for agent in running.values():
        agent.wait_ready()
    wait_for(f"{count} healthy workers", lambda: healthy(cluster, ns) == count)


def mesh_fixture(label: str, plan: Plan) -> Any:
    """A pytest fixture, for a module to name: the fleet of `plan` under the session
    operator, in a namespace of its own (`<TEST_NAMESPACE_PREFIX><label><random>`), shared
    by the module's tests."""

    @pytest.fixture(scope="module")
    def fixture(
        cluster: Cluster, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Mesh]:
        logs = tmp_path_factory.mktemp(label.rstrip("-"))
        with (
            fresh_namespace(cluster, f"{TEST_NAMESPACE_PREFIX}{label}") as namespace,
            running_mesh(cluster, operator, namespace, plan, logs) as mesh,
        ):
            yield mesh

    return fixture
