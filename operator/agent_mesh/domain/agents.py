"""The operator's in-memory view of MeshAgents: who exists, under which identity.

Fed from the watch, so identity checks on every mesh call are dictionary lookups, not
apiserver round trips. A token is bound to an agent's uid: a MeshAgent deleted and
re-created under the same name is a different agent, and old tokens do not match it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from agent_mesh.domain.health import HealthStatus

AGENT_LABEL = "agentmesh.io/agent"
"""Pod label naming the MeshAgent (by metadata.name) a user-owned pod runs."""

DEFAULT_PORT: Final = 8080
"""spec.port when unset: the MeshAgent model's default, and the record's."""
DEFAULT_MAX_CONCURRENT_TASKS: Final = 10
"""spec.maxConcurrentTasks when unset: the MeshAgent model's default, and the record's."""

logger = logging.getLogger("agent_mesh.agents")


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """What the mesh needs to know about one MeshAgent to authenticate it."""

    namespace: str
    name: str
    uid: str
    agent_id: str
    agent_type: str
    capabilities: tuple[str, ...]
    service_account: str | None
    credential_hash: str | None
    external: bool
    endpoint: str | None = None
    """spec.endpoint (external agents)."""
    port: int = DEFAULT_PORT
    max_concurrent_tasks: int = DEFAULT_MAX_CONCURRENT_TASKS
    version: str | None = None
    workload: bool = False
    network: str | None = None
    """spec.network as written (None: the operator's default)."""
    # status as last read from the apiserver: seeds health after an operator restart
    last_seen: dt.datetime | None = None
    health: HealthStatus | None = None
    active_tasks: int = 0
    completed_tasks: int = field(default=0, compare=False)
    failed_tasks: int = field(default=0, compare=False)
    avg_execution_ms: float | None = field(default=None, compare=False)
    status_endpoint: str | None = None
    tailnet_endpoint: str | None = None
    tailnet_device: tuple[str, str] | None = field(default=None, compare=False)
    """(device id, host name) from status.tailscale: what to remove from the control
    server when the agent is deleted."""
    """A managed agent connected to the tailnet: its MagicDNS URL (status.tailscale)."""
    conditions: tuple[Mapping[str, Any], ...] = field(default=(), compare=False)
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)
    """metadata.labels: what a task's agentSelector.labels matches."""
    generation: int | None = None
    resource_version: str | None = field(default=None, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.agent_id}"


class AgentRegistry:
    """MeshAgents by (namespace, agentId) and by (namespace, name).

    Two MeshAgents claiming one agentId in a namespace is a misconfiguration: the first
    one seen keeps the identity, the other is ignored (and logged) until it is fixed.
    """

    def __init__(self) -> None:
        self._by_id: dict[tuple[str, str], AgentRecord] = {}
        self._by_name: dict[tuple[str, str], AgentRecord] = {}
        # discovery indexes: agentIds per namespace, per (namespace, capability), per type
        self._in_namespace: dict[str, set[str]] = {}
        self._with_capability: dict[tuple[str, str], set[str]] = {}
        self._of_type: dict[tuple[str, str], set[str]] = {}

    def upsert(self, record: AgentRecord) -> bool:
        """Add or replace; False when another agent already holds the agentId."""
        key = (record.namespace, record.agent_id)
        holder = self._by_id.get(key)
        if holder is not None and holder.uid != record.uid and holder.name != record.name:
            logger.warning(
                "MeshAgent %s/%s claims agentId %s, already held by MeshAgent %s: ignored",
                record.namespace,
                record.name,
                record.agent_id,
                holder.name,
            )
            return False
        previous = self._by_name.get((record.namespace, record.name))
        if previous is not None and previous.uid != record.uid:
            self._drop(previous)
        old = self._by_id.get(key)
        if old is not None:
            self._unindex(old)
        self._by_id[key] = record
        self._by_name[(record.namespace, record.name)] = record
        self._index(record)
        return True

    def _index(self, record: AgentRecord) -> None:
        ns, agent_id = record.namespace, record.agent_id
        self._in_namespace.setdefault(ns, set()).add(agent_id)
        self._of_type.setdefault((ns, record.agent_type), set()).add(agent_id)
        for capability in record.capabilities:
            self._with_capability.setdefault((ns, capability), set()).add(agent_id)

    def _unindex(self, record: AgentRecord) -> None:
        ns, agent_id = record.namespace, record.agent_id
        discard_member(self._in_namespace, ns, agent_id)
        discard_member(self._of_type, (ns, record.agent_type), agent_id)
        for capability in record.capabilities:
            discard_member(self._with_capability, (ns, capability), agent_id)

    def candidates(
        self, namespace: str, capabilities: Iterable[str] = (), agent_type: str | None = None
    ) -> list[AgentRecord]:
        """Agents in `namespace` with every capability (and the type, when given), by id."""
        ids = self.candidate_ids(namespace, capabilities, agent_type)
        return [self._by_id[(namespace, agent_id)] for agent_id in sorted(ids)]

    def candidate_ids(
        self, namespace: str, capabilities: Iterable[str] = (), agent_type: str | None = None
    ) -> set[str]:
        """The agentIds of `candidates`, intersecting the smallest index sets first (C-speed
        set operations; no scan of the namespace)."""
        sets = [self._with_capability.get((namespace, c), _EMPTY) for c in set(capabilities)]
        if agent_type is not None:
            sets.append(self._of_type.get((namespace, agent_type), _EMPTY))
        if not sets:
            sets.append(self._in_namespace.get(namespace, _EMPTY))
        sets.sort(key=len)
        ids = set(sets[0])
        for other in sets[1:]:
            if not ids:
                break
            ids &= other
        return ids

    def remove(self, namespace: str, name: str, uid: str | None = None) -> AgentRecord | None:
        """Forget the MeshAgent (only if it still has `uid`, when given)."""
        record = self._by_name.get((namespace, name))
        if record is None or (uid is not None and record.uid != uid):
            return None
        self._drop(record)
        return record

    def _drop(self, record: AgentRecord) -> None:
        self._by_name.pop((record.namespace, record.name), None)
        if self._by_id.get((record.namespace, record.agent_id)) is record:
            del self._by_id[(record.namespace, record.agent_id)]
            self._unindex(record)

    def get(self, namespace: str, agent_id: str) -> AgentRecord | None:
        return self._by_id.get((namespace, agent_id))

    def by_name(self, namespace: str, name: str) -> AgentRecord | None:
        return self._by_name.get((namespace, name))

    def with_service_account(self, namespace: str, service_account: str) -> list[AgentRecord]:
        return [
            r
            for (ns, _), r in self._by_id.items()
            if ns == namespace and r.service_account == service_account
        ]

    def __iter__(self) -> Iterator[AgentRecord]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)


_EMPTY: frozenset[str] = frozenset()
K = TypeVar("K")


def discard_member(index: dict[K, set[str]], key: K, agent_id: str) -> None:
    """Take `agent_id` out of the set at `key`; an emptied set goes (indexes hold none)."""
    members = index.get(key)
    if members is not None:
        members.discard(agent_id)
        if not members:
            del index[key]
