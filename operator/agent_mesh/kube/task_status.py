"""MeshTask status writes: the patches api/meshtask_status.py builds, as merge patches.

Every write carries the resourceVersion of the coordinator's last write (or read), so a
write never lands on a version it has not seen. A final phase is written once: on a
conflict the object is read again, and if another writer already finished it, the
coordinator adopts that ending instead of writing its own.
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import GROUP, VERSION
from agent_mesh.domain.tasks import TaskState

logger = logging.getLogger("agent_mesh.tasks")
CONCURRENCY: Final = 32
PLURAL: Final = "meshtasks"


class WriteResult(StrEnum):
    """What became of one status write."""

    WRITTEN = "written"
    """The patch landed; the answer is the patched object."""
    GONE = "gone"
    """The MeshTask no longer exists."""
    CONFLICT = "conflict"
    """Someone wrote since the resourceVersion sent; the answer is the object as it is now."""


class TaskStatusWriter:
    """Writes MeshTask status (bounded concurrency) and deletes finished tasks (TTL)."""

    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self.writes = 0

    async def write(
        self, state: TaskState, status: dict[str, Any], resource_version: str | None
    ) -> tuple[WriteResult, dict[str, Any] | None]:
        """(WRITTEN, the patched object), (GONE, None) when the task was deleted, or
        (CONFLICT, the current object) when someone wrote since `resource_version`."""
        assert state.name is not None
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        async with self._limit:
            try:
                answer = await self._custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
                    GROUP,
                    VERSION,
                    state.namespace,
                    PLURAL,
                    state.name,
                    body,
                    _content_type="application/merge-patch+json",
                )
            except ApiException as error:
                if error.status == 404:
                    return WriteResult.GONE, None
                if error.status != 409:
                    raise
                try:
                    current = await self._custom.get_namespaced_custom_object(
                        GROUP, VERSION, state.namespace, PLURAL, state.name
                    )
                except ApiException as again:
                    if again.status == 404:
                        return WriteResult.GONE, None
                    raise
                return WriteResult.CONFLICT, dict(current)
        self.writes += 1
        return WriteResult.WRITTEN, dict(answer)

    async def delete(self, state: TaskState) -> None:
        assert state.name is not None
        async with self._limit:
            try:
                await self._custom.delete_namespaced_custom_object(
                    GROUP, VERSION, state.namespace, PLURAL, state.name
                )
            except ApiException as error:
                if error.status != 404:
                    raise
