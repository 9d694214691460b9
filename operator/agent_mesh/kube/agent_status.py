"""MeshAgent status writes from outside kopf handlers: the patches api/meshagent_status.py
builds (health, lastSeen, activeTasks, endpoint, Ready), as merge patches on the status
subresource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import GROUP, VERSION
from agent_mesh.api.meshagent import agent_record
from agent_mesh.domain.agents import AgentRecord

logger = logging.getLogger("agent_mesh.status")
CONCURRENCY: Final = 16


class WriteResult(StrEnum):
    """What became of one status write (as for MeshTask status, kube/task_status.py)."""

    WRITTEN = "written"
    """The patch landed; the record returned is the patched object (its new version)."""
    CONFLICT = "conflict"
    """Someone wrote since the record's resourceVersion; the record returned is the
    object as it is now, to write again from."""
    GONE = "gone"
    """The MeshAgent no longer exists."""


class AgentStatusWriter:
    """Writes status patches with bounded concurrency; counts what it wrote."""

    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self.writes = 0

    async def write(
        self, record: AgentRecord, patch: Mapping[str, Any]
    ) -> tuple[WriteResult, AgentRecord | None]:
        """Write unless the object changed since `record` was read (its conditions would
        be overwritten with stale ones): then CONFLICT with the object as it is now."""
        body: dict[str, Any] = {"status": dict(patch)}
        if record.resource_version:
            body["metadata"] = {"resourceVersion": record.resource_version}
        args = (GROUP, VERSION, record.namespace, "meshagents", record.name)
        async with self._limit:
            try:
                written = await self._custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
                    *args, body, _content_type="application/merge-patch+json"
                )
            except ApiException as error:
                if error.status == 404:
                    return WriteResult.GONE, None
                if error.status != 409:
                    raise
                try:
                    current = await self._custom.get_namespaced_custom_object(*args)
                except ApiException as gone:
                    if gone.status == 404:
                        return WriteResult.GONE, None
                    raise
                return WriteResult.CONFLICT, agent_record(current)
        self.writes += 1
        return WriteResult.WRITTEN, agent_record(written)
