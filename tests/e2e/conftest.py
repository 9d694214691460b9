"""Scaffolding of the e2e tests: a namespace the session operator watches and the agents
running in it; for tests that need an operator of their own, a namespace family apart
from the session's, that operator (own_operator) and its workers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agentprocs import AgentProcess, launch, register, wait_ready
from tests.conftest import (
    SESSION,
    TEST_NAMESPACE_PREFIX,
    Cluster,
    OperatorProcess,
    start_operator,
    temporary_namespace,
    wait_for,
)
from tests.e2e.test_tasks import healthy
from tests.meshhelpers import GROUP, VERSION

OWN_PREFIX = f"amr-{SESSION}-"
"""The namespaces operators of a test's own watch (own_operator), apart from the session's."""


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    with temporary_namespace(
        cluster, f"{TEST_NAMESPACE_PREFIX}tasks-{uuid.uuid4().hex[:6]}"
    ) as name:
        yield name


@pytest.fixture
def agents(
    cluster: Cluster, operator: OperatorProcess, ns: str, tmp_path: Path
) -> Iterator[dict[str, AgentProcess]]:
    """start(agent_id, capabilities): an echo_worker process registered in `ns`."""
    running: dict[str, AgentProcess] = {}
    yield running
    for agent in running.values():
        agent.stop()


@pytest.fixture
def own_ns(cluster: Cluster) -> Iterator[str]:
    with temporary_namespace(cluster, f"{OWN_PREFIX}{uuid.uuid4().hex[:8]}") as name:
        yield name


@pytest.fixture
def processes() -> Iterator[dict[str, AgentProcess]]:
    running: dict[str, AgentProcess] = {}
    yield running
    for agent in running.values():
        agent.stop()


def own_operator(
    cluster: Cluster, log: Path, extra_env: dict[str, str] | None = None
) -> OperatorProcess:
    return start_operator(
        cluster,
        log,
        "--no-webhooks",
        watch=f"{OWN_PREFIX}*",
        operator_namespace=f"{OWN_PREFIX}system",
        extra_env=extra_env,
    )


def workers(
    cluster: Cluster,
    operator: OperatorProcess,
    ns: str,
    processes: dict[str, AgentProcess],
    log_dir: Path,
    count: int,
    slots: int = 10,
) -> None:
    for i in range(count):
        agent_id = f"w{i}"
        url, credential = register(cluster, ns, agent_id, "worker", ["echo"])
        cluster.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "meshagents", agent_id, {"spec": {"maxConcurrentTasks": slots}}
        )
        processes[agent_id] = launch(
            "echo_worker.py", operator, ns, agent_id, url, credential, log_dir
        )
    for agent in processes.values():
        wait_ready(agent)
    wait_for(f"{count} healthy workers", lambda: healthy(cluster, ns) == count)
