"""Agent processes for tests: the programs in examples/ (or tests/programs/), run as real
processes serving HTTP on 127.0.0.1, each registered as an external MeshAgent with its
own credential (agent_mesh.testing, with the tests' short intervals)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from agent_mesh import testing
from agent_mesh.testing import AgentProcess
from tests.conftest import Cluster, OperatorProcess

__all__ = ["PROGRAMS", "AgentProcess", "fleet", "launch", "register", "wait_ready"]

PROGRAMS = Path(__file__).resolve().parent / "programs"
"""Agent programs written for tests (e.g. recorder.py, which shows what it was sent)."""

SETTINGS = {
    "AGENT_MESH_HEARTBEAT_SECONDS": "5",
    "AGENT_MESH_POLICY_SYNC_SECONDS": "1",
    "AGENT_MESH_DRAIN_SECONDS": "1",
    "AGENT_MESH_LOG_FORMAT": "text",
}


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


def wait_ready(agent: AgentProcess, timeout: float = 60) -> None:
    agent.wait_ready(timeout)


@contextlib.contextmanager
def fleet(
    cluster: Cluster,
    operator: OperatorProcess,
    namespace: str,
    plan: list[tuple[str, str, str, list[str]]],
    log_dir: Path,
) -> Iterator[dict[str, AgentProcess]]:
    """The agents of `plan` ((example, agent_id, agent_type, capabilities) each), registered
    in `namespace` and ready, by agent_id; stopped when the block ends."""
    agents: dict[str, AgentProcess] = {}
    try:
        for example, agent_id, agent_type, capabilities in plan:
            url, credential = register(cluster, namespace, agent_id, agent_type, capabilities)
            agents[agent_id] = launch(
                example, operator, namespace, agent_id, url, credential, log_dir
            )
        for agent in agents.values():
            wait_ready(agent)
        yield agents
    finally:
        for agent in agents.values():
            agent.stop()
