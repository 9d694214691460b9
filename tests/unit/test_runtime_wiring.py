"""The operator's wiring: the services it builds get the routing it was configured with."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client

from agent_mesh.config import OperatorConfig
from agent_mesh.domain.clock import SystemClock
from agent_mesh.runtime import plugins
from agent_mesh.runtime.services import MeshRuntime
from tests.support.routing import Cheapest, FakeEntryPoint, agent, task


@pytest.fixture
async def runtime(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MeshRuntime]:
    installed = [FakeEntryPoint("cheapest", Cheapest)]
    monkeypatch.setattr(plugins, "entry_points", lambda *, group: installed)
    built = MeshRuntime(
        OperatorConfig(default_strategy="round-robin"), client.ApiClient(), SystemClock()
    )
    yield built  # never started: nothing here talks to a cluster
    await built.stop()


async def test_the_coordinator_routes_by_the_configured_default_strategy(
    runtime: MeshRuntime,
) -> None:
    coordinator = runtime.coordinator
    for record in (agent("a", "x"), agent("b", "x")):
        coordinator.agent_seen(record)
    picks = [coordinator.router.route_and_assign(task("x")) for _ in range(3)]
    assert [(p.agent_id, p.strategy) for p in picks] == [
        ("a", "round-robin"),
        ("b", "round-robin"),
        ("a", "round-robin"),
    ]


async def test_the_coordinator_finds_the_installed_plugin_strategies(
    runtime: MeshRuntime,
) -> None:
    coordinator = runtime.coordinator
    for record in (agent("a", "x", labels={"cost": "5"}), agent("b", "x", labels={"cost": "2"})):
        coordinator.agent_seen(record)
    decision = coordinator.router.route(task("x", strategy="cheapest"))
    assert (decision.agent_id, decision.strategy) == ("b", "cheapest")
