"""A namespace that kopf sees only in a listing (created while the operator started, or
while its namespace watch re-listed after "410 Gone") is still served."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kopf._cogs.structs import references
from kopf._core.reactor import observation

from agent_mesh.runtime.namespace_observation import (
    observe_listed_namespaces,
    process_namespace_event,
)

PATTERNS = ["team-*"]  # the operator's --namespace patterns


def listed(name: str, status: dict[str, Any] | None = None, **metadata: Any) -> Any:
    """A namespace as kopf's watch stream yields it from its listing: event type None."""
    return {
        "type": None,
        "object": {"metadata": {"name": name, **metadata}, "status": status or {}},
    }


async def test_a_namespace_seen_only_in_a_listing_is_served() -> None:
    insights = references.Insights()
    await process_namespace_event(
        raw_event=listed("team-a"), namespaces=PATTERNS, insights=insights
    )
    assert insights.namespaces == {"team-a"}


async def test_kopf_alone_drops_a_namespace_seen_only_in_a_listing() -> None:
    """Why the module exists: if this fails, kopf serves listed namespaces itself and
    agent_mesh.runtime.namespace_observation can go."""
    insights = references.Insights()
    await observation.process_discovered_namespace_event(
        raw_event=listed("team-a"), namespaces=PATTERNS, insights=insights
    )
    assert insights.namespaces == set()


async def test_a_listed_namespace_outside_the_patterns_is_not_served() -> None:
    insights = references.Insights()
    await process_namespace_event(raw_event=listed("other"), namespaces=PATTERNS, insights=insights)
    assert insights.namespaces == set()


async def test_a_listed_namespace_already_deleted_stops_being_served() -> None:
    insights = references.Insights(namespaces={"team-a"})
    emptied = {"conditions": [{"type": "NamespaceContentRemaining", "status": "False"}]}
    gone = listed("team-a", emptied, deletionTimestamp="2026-12-06T00:00:00Z")
    await process_namespace_event(raw_event=gone, namespaces=PATTERNS, insights=insights)
    assert insights.namespaces == set()


async def test_listed_and_watched_events_both_wake_the_orchestrator() -> None:
    insights = references.Insights()
    woken: list[bool] = []

    async def waiter() -> None:
        async with insights.revised:
            await insights.revised.wait()
            woken.append(True)

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the waiter holds the condition's wait before the event comes
    await process_namespace_event(
        raw_event=listed("team-b"), namespaces=PATTERNS, insights=insights
    )
    await asyncio.wait_for(task, 5)
    assert woken == [True]


def test_the_operator_installs_it_in_kopfs_observer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        observation,
        "process_discovered_namespace_event",
        observation.process_discovered_namespace_event,
    )
    observe_listed_namespaces()
    assert observation.process_discovered_namespace_event is process_namespace_event
