"""TailnetConnected, built: a tailscale agent is never silently taken for connected; the
reason says what is missing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from agent_mesh.api.meshagent_status import tailnet_conditions

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _tailnet(conditions: list[dict[str, Any]] | None = None, **kw: Any) -> list[dict[str, Any]]:
    args: dict[str, Any] = {
        "tailscale": True,
        "managed": True,
        "configured": True,
        "problem": None,
        "generation": 3,
        "now": NOW,
        **kw,
    }
    return tailnet_conditions(conditions or [], **args)


@pytest.mark.parametrize(
    ("kw", "reason", "says"),
    [
        ({}, "SidecarNotReady", "has not read its state yet"),
        ({"configured": False}, "TailnetNotConfigured", "AGENT_MESH_TAILSCALE_TAILNET_DOMAIN"),
        ({"managed": False}, "SidecarNotInjected", "agentmesh.io/agent=<MeshAgent name>"),
        ({"problem": "a container is named tailscale"}, "WorkloadRefused", "container"),
    ],
)
def test_tailscale_agent_is_not_connected_and_the_reason_says_why(
    kw: dict[str, Any], reason: str, says: str
) -> None:
    (condition,) = _tailnet(**kw)
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "TailnetConnected",
        "False",
        reason,
    )
    assert says in condition["message"]
    assert condition["observedGeneration"] == 3


def test_direct_agent_gets_no_tailnet_condition() -> None:
    ready = [{"type": "Ready", "status": "True", "reason": "AgentHealthy", "message": ""}]
    assert _tailnet(ready, tailscale=False) == ready


def test_agent_that_left_the_tailnet_says_it_is_not_used() -> None:
    before = _tailnet()
    (after,) = _tailnet(before, tailscale=False)
    assert (after["status"], after["reason"]) == ("False", "TailnetNotUsed")


def test_unchanged_condition_is_not_rewritten() -> None:
    first = _tailnet()
    assert _tailnet(first, now=NOW + dt.timedelta(hours=1)) == first
