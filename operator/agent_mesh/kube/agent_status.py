"""MeshAgent status writes from outside kopf handlers: the patches api/meshagent_status.py
builds (health, lastSeen, activeTasks, endpoint, Ready), as merge patches on the status
subresource."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from kubernetes_asyncio import client

from agent_mesh.api.meshagent import agent_record
from agent_mesh.domain.agents import AgentRecord
from agent_mesh.kube.status_writer import StatusWriter
from agent_mesh.kube.status_writer import WriteResult as WriteResult

CONCURRENCY: Final = 16


class AgentStatusWriter(StatusWriter):
    """Writes MeshAgent status patches with bounded concurrency; counts what it wrote."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(api, "meshagents", CONCURRENCY)

    async def write(
        self, record: AgentRecord, patch: Mapping[str, Any]
    ) -> tuple[WriteResult, AgentRecord | None]:
        """Write unless the object changed since `record` was read (its conditions would
        be overwritten with stale ones): then CONFLICT with the object as it is now."""
        result, answer = await self.patch_status(
            record.namespace, record.name, patch, record.resource_version
        )
        return result, agent_record(answer) if answer is not None else None
