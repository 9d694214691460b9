"""Fault: an agent process killed with SIGKILL (no drain, no goodbye) while others
address it. A broadcast to 20 monitors, one of them killed, reports that one as
unreachable after its retries, and every other monitor hears the event."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from agent_mesh.sdk import MeshClient
from agent_mesh.transport.client import Outcome
from tests.support.agents import Mesh, mesh_fixture

MONITORS = 20

pytestmark = pytest.mark.fault_agent_killed


mesh = mesh_fixture(
    "killed-", [("monitor.py", f"monitor-{i:02d}", "monitor", ["observe"]) for i in range(MONITORS)]
)
"""20 monitors (examples/monitor.py) in a namespace of their own: what this file kills is
no other file's fleet."""


@pytest.fixture
async def conductor(mesh: Mesh) -> AsyncIterator[MeshClient]:
    """An orchestrator calling from the test process."""
    async with mesh.client("orchestrator", f"conductor-{uuid.uuid4().hex[:6]}") as client_:
        yield client_


async def test_broadcast_to_20_monitors_with_one_dead(mesh: Mesh, conductor: MeshClient) -> None:
    dead = mesh.agents["monitor-07"]
    dead.kill()
    event = f"deploy.{uuid.uuid4().hex[:6]}"
    outcomes = await conductor.broadcast(event, {"version": "1.2"}, capability="observe")
    assert set(outcomes) == {f"monitor-{i:02d}" for i in range(MONITORS)}
    assert outcomes["monitor-07"].outcome is Outcome.CONNECT_ERROR
    assert outcomes["monitor-07"].attempts == 4  # the first try and 3 retries
    delivered = {name for name, d in outcomes.items() if d.outcome is Outcome.OK}
    assert delivered == set(outcomes) - {"monitor-07"}
    for name in sorted(delivered)[:3]:  # and they did hear it, from the conductor
        heard = (await conductor.request(None, to=name))["heard"]
        me = (await conductor.identity()).agent_id
        assert {"event": event, "from": me, "data": {"version": "1.2"}} in heard
