"""The health loop's status writes against a stand-in for the apiserver's precondition
rules (the monitor's own StatusWriter Protocol): a conflict is adopted and written again,
its own write's version is the next write's precondition, a deleted agent is let go."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from agent_mesh.api.meshagent import agent_record
from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.clock import FakeClock
from agent_mesh.domain.health import HealthPolicy, HealthStatus, HealthTracker
from agent_mesh.health.monitor import WRITE_ATTEMPTS, HealthMonitor
from agent_mesh.kube.agent_status import WriteResult

NS = "ns"


class Apiserver:
    """One MeshAgent's status the way the apiserver keeps it: a merge patch with a
    resourceVersion lands only on that version; every write makes a new version."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.sent: list[str | None] = []
        """The resourceVersion each write carried, in order."""
        self.meddle = False
        """Another writer changes the object just before each of our writes."""

    def create(self, name: str) -> AgentRecord:
        self.objects[name] = {
            "metadata": {"namespace": NS, "name": name, "uid": f"uid-{name}"},
            "spec": {"agentId": name, "agentType": "worker"},
            "status": {"healthStatus": "pending"},
        }
        return self.other_writer(name, {})

    def other_writer(self, name: str, status: Mapping[str, Any]) -> AgentRecord:
        obj = self.objects[name]
        obj["status"].update(status)
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        return agent_record(copy.deepcopy(obj))

    def status(self, name: str) -> dict[str, Any]:
        return self.objects[name]["status"]  # type: ignore[no-any-return]

    async def write(
        self, record: AgentRecord, patch: Mapping[str, Any]
    ) -> tuple[WriteResult, AgentRecord | None]:
        self.sent.append(record.resource_version)
        if record.name not in self.objects:
            return WriteResult.GONE, None
        if self.meddle:
            self.other_writer(record.name, {})
        obj = self.objects[record.name]
        if (
            record.resource_version
            and record.resource_version != obj["metadata"]["resourceVersion"]
        ):
            return WriteResult.CONFLICT, agent_record(copy.deepcopy(obj))
        return WriteResult.WRITTEN, self.other_writer(record.name, patch)


def setup(name: str = "worker") -> tuple[Apiserver, AgentRegistry, HealthMonitor, FakeClock]:
    apiserver = Apiserver()
    registry = AgentRegistry()
    clock = FakeClock()
    record = apiserver.create(name)
    registry.upsert(record)  # what the watch delivered
    monitor = HealthMonitor(HealthTracker(HealthPolicy()), registry, apiserver, None, clock)
    monitor.seen(record)
    return apiserver, registry, monitor, clock


def first_beat(
    registry: AgentRegistry, monitor: HealthMonitor, name: str = "worker"
) -> AgentRecord:
    """Agent `name` beats for the first time; its record as the registry holds it."""
    record = registry.get(NS, name)
    assert record is not None
    monitor.beat(record, active_tasks=0, version=None, endpoint=None)
    return record


async def test_a_health_transition_is_written_despite_a_conflicting_write() -> None:
    apiserver, registry, monitor, _ = setup()
    # registration writes a condition the watch has not delivered yet: version 2
    credential = {
        "type": "CredentialIssued",
        "status": "True",
        "reason": "Issued",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    apiserver.other_writer("worker", {"conditions": [credential]})
    record = registry.get(NS, "worker")
    assert record is not None and record.resource_version == "1"

    monitor.beat(record, active_tasks=0, version=None, endpoint=None)
    assert await monitor.flush() == 1

    assert apiserver.sent == ["1", "2"]  # refused on the stale version, written on the new
    status = apiserver.status("worker")
    assert status["healthStatus"] == "healthy"
    types = [c["type"] for c in status["conditions"]]
    assert types == ["CredentialIssued", "Ready"]  # the other writer's condition kept
    assert await monitor.flush() == 0  # and not written again


async def test_the_next_write_carries_the_version_its_own_write_produced() -> None:
    apiserver, registry, monitor, clock = setup()
    first_beat(registry, monitor)
    assert await monitor.flush() == 1
    clock.advance(61)
    assert [t.current for t in monitor.tracker.sweep(clock.now())] == [HealthStatus.DEGRADED]

    assert await monitor.flush() == 1  # the watch has not delivered version 2 yet

    assert apiserver.sent == ["1", "2"]  # no conflict on its own earlier write
    assert apiserver.status("worker")["healthStatus"] == "degraded"


async def test_a_version_the_watch_delivers_replaces_the_adopted_one() -> None:
    apiserver, registry, monitor, clock = setup()
    first_beat(registry, monitor)
    assert await monitor.flush() == 1
    newer = apiserver.other_writer("worker", {})  # version 3, delivered by the watch
    registry.upsert(newer)
    clock.advance(61)
    monitor.tracker.sweep(clock.now())

    assert await monitor.flush() == 1
    assert apiserver.sent == ["1", "3"]


async def test_a_deleted_agents_status_is_not_written_again() -> None:
    apiserver, registry, monitor, clock = setup()
    first_beat(registry, monitor)
    del apiserver.objects["worker"]  # deleted; the watch's DELETED is not here yet

    for _ in range(5):
        assert await monitor.flush() == 0
        clock.advance(61)
        monitor.tracker.sweep(clock.now())

    assert apiserver.sent == ["1"]
    assert monitor.tracker.get((NS, "worker")) is None


async def test_a_write_that_keeps_conflicting_is_tried_a_bounded_number_of_times_per_flush() -> (
    None
):
    apiserver, registry, monitor, _ = setup()
    first_beat(registry, monitor)
    apiserver.meddle = True

    assert await monitor.flush() == 0
    assert len(apiserver.sent) == WRITE_ATTEMPTS

    apiserver.meddle = False  # the next flush writes it: the transition was kept
    assert await monitor.flush() == 1
    assert apiserver.status("worker")["healthStatus"] == "healthy"
