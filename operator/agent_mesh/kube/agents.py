"""Read MeshAgents straight from the apiserver, for when the watch has not caught up."""

from __future__ import annotations

import time
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import GROUP, VERSION
from agent_mesh.api.meshagent import agent_record
from agent_mesh.domain.agents import AgentRecord
from agent_mesh.kube.errors import unavailable

NEGATIVE_TTL_SECONDS: Final = 2.0


class AgentFetcher:
    """Looks a MeshAgent up by (namespace, agentId), remembering misses for a moment so
    a caller with a bogus identity cannot turn each request into apiserver load."""

    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._misses: dict[tuple[str, str], float] = {}

    async def __call__(self, namespace: str, agent_id: str) -> AgentRecord | None:
        key = (namespace, agent_id)
        now = time.monotonic()
        if self._misses.get(key, 0.0) > now:
            return None
        if len(self._misses) > 10_000:
            self._misses = {k: t for k, t in self._misses.items() if t > now}
        found = await self._lookup(namespace, agent_id)
        if found is None:
            self._misses[key] = now + NEGATIVE_TTL_SECONDS
        return found

    async def _lookup(self, namespace: str, agent_id: str) -> AgentRecord | None:
        try:
            body: dict[str, Any] = await self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "meshagents", agent_id
            )
            record = agent_record(body)
            if record.agent_id == agent_id:
                return record
        except ApiException as error:
            if error.status != 404:
                raise unavailable(f"reading MeshAgent {namespace}/{agent_id}", error) from error
        # agentId differs from metadata.name: scan the namespace (rare, and misses are cached).
        try:
            listing = await self._custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "meshagents"
            )
        except ApiException as error:
            raise unavailable(f"listing MeshAgents in {namespace}", error) from error
        for item in listing.get("items", []):
            record = agent_record(item)
            if record.agent_id == agent_id:
                return record
        return None


async def read_meshagent(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The MeshAgent `namespace/name` as the apiserver has it now, or None when there is
    none; UnavailableError when it cannot be read."""
    try:
        found: dict[str, Any] = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "meshagents", name
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise unavailable(f"reading MeshAgent {namespace}/{name}", error) from error
    return found
