"""MeshAgent status writes from outside kopf handlers: the patches api/meshagent_status.py
builds (health, lastSeen, activeTasks, endpoint, Ready), as merge patches on the status
subresource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import GROUP, VERSION
from agent_mesh.domain.agents import AgentRecord

logger = logging.getLogger("agent_mesh.status")
CONCURRENCY: Final = 16


class AgentStatusWriter:
    """Writes status patches with bounded concurrency; counts what it wrote."""

    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self.writes = 0

    async def write(self, record: AgentRecord, patch: Mapping[str, Any]) -> bool:
        """Write unless the object changed since `record` was read (its conditions would
        be overwritten with stale ones) or is gone: then False, and the caller retries
        from the newer version the watch delivers."""
        body: dict[str, Any] = {"status": dict(patch)}
        if record.resource_version:
            body["metadata"] = {"resourceVersion": record.resource_version}
        async with self._limit:
            try:
                await self._custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
                    GROUP,
                    VERSION,
                    record.namespace,
                    "meshagents",
                    record.name,
                    body,
                    _content_type="application/merge-patch+json",
                )
            except ApiException as error:
                if error.status in (404, 409):
                    return False
                raise
        self.writes += 1
        return True

    async def write_all(
        self, items: Sequence[tuple[AgentRecord, Mapping[str, Any]]]
    ) -> list[bool | BaseException]:
        return await asyncio.gather(
            *(self.write(record, patch) for record, patch in items), return_exceptions=True
        )
