"""Scaffolding of the e2e tests: a namespace the session operator watches, a namespace in
the family of operators a test starts of its own (tests/support/operators.py
`own_operator`), and the agents a test runs, stopped when it ends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.agents import AgentProcess
from tests.support.cluster import Cluster
from tests.support.namespaces import TEST_NAMESPACE_PREFIX, family, fresh_namespace

OWN_FAMILY = family("amr")
"""The namespaces operators of a test's own watch, apart from the session's."""


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    with fresh_namespace(cluster, f"{TEST_NAMESPACE_PREFIX}tasks-") as name:
        yield name


@pytest.fixture
def own_ns(cluster: Cluster) -> Iterator[str]:
    with fresh_namespace(cluster, OWN_FAMILY) as name:
        yield name


@pytest.fixture
def agents() -> Iterator[dict[str, AgentProcess]]:
    """The agent processes a test starts, by agent_id; stopped when it ends."""
    running: dict[str, AgentProcess] = {}
    yield running
    for agent in running.values():
        agent.stop()
