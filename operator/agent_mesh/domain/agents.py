"""The operator's in-memory view of MeshAgents: who exists, under which identity.

Fed from the watch, so identity checks on every mesh call are dictionary lookups, not
apiserver round trips. A token is bound to an agent's uid: a MeshAgent deleted and
re-created under the same name is a different agent, and old tokens do not match it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

AGENT_LABEL = "agentmesh.io/agent"
"""Pod label naming the MeshAgent (by metadata.name) a user-owned pod runs."""

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

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.agent_id}"


def record_from_body(body: Mapping[str, Any]) -> AgentRecord:
    """Read an AgentRecord from a MeshAgent object as the apiserver returns it."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    workload = spec.get("workload") or {}
    pod_spec = workload.get("spec") or {}
    credential = status.get("credential") or {}
    return AgentRecord(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        agent_id=str(spec.get("agentId") or meta.get("name") or ""),
        agent_type=str(spec.get("agentType") or ""),
        capabilities=tuple(spec.get("capabilities") or ()),
        service_account=pod_spec.get("serviceAccountName") or None,
        credential_hash=credential.get("sha256") or None,
        external=bool(spec.get("endpoint")),
    )


class AgentRegistry:
    """MeshAgents by (namespace, agentId) and by (namespace, name).

    Two MeshAgents claiming one agentId in a namespace is a misconfiguration: the first
    one seen keeps the identity, the other is ignored (and logged) until it is fixed.
    """

    def __init__(self) -> None:
        self._by_id: dict[tuple[str, str], AgentRecord] = {}
        self._by_name: dict[tuple[str, str], AgentRecord] = {}

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
        self._by_id[key] = record
        self._by_name[(record.namespace, record.name)] = record
        return True

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
