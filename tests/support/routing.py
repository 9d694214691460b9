"""What routing tests build: agent records with health and load, task demands, a strategy
plug-in (Cheapest) and an entry point that loads one, as an installed package would."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent_mesh.domain.agents import AgentRecord
from agent_mesh.domain.health import HealthStatus
from agent_mesh.domain.routing import Candidate, TaskDemand


def agent(
    agent_id: str,
    *capabilities: str,
    namespace: str = "ns",
    agent_type: str = "worker",
    health: HealthStatus | None = HealthStatus.HEALTHY,
    limit: int = 10,
    active: int = 0,
    labels: Mapping[str, str] | None = None,
    name: str | None = None,
) -> AgentRecord:
    return AgentRecord(
        namespace=namespace,
        name=name or agent_id,
        uid=f"uid-{agent_id}",
        agent_id=agent_id,
        agent_type=agent_type,
        capabilities=capabilities,
        service_account=None,
        credential_hash=None,
        external=False,
        max_concurrent_tasks=limit,
        health=health,
        active_tasks=active,
        labels=dict(labels or {}),
    )


def task(*capabilities: str, namespace: str = "ns", **kw: Any) -> TaskDemand:
    return TaskDemand(namespace, "t", frozenset(capabilities), **kw)


class Cheapest:
    """A plug-in: the candidate with the lowest 'cost' label."""

    seen: list[list[str]] = []

    def select(self, candidates: Sequence[Candidate], task: TaskDemand) -> str | None:
        Cheapest.seen.append([c.agent_id for c in candidates])
        return min(candidates, key=lambda c: int(c.labels.get("cost", "99"))).agent_id


@dataclass
class FakeEntryPoint:
    name: str
    target: Any
    value: str = "plugin.module:Strategy"

    def load(self) -> Any:
        if isinstance(self.target, Exception):
            raise self.target
        return self.target
