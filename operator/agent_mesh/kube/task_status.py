"""MeshTask status writes: the patches api/meshtask_status.py builds, as merge patches.

Every write carries the resourceVersion of the coordinator's last write (or read), so a
write never lands on a version it has not seen. A final phase is written once: on a
conflict the object is read again, and if another writer already finished it, the
coordinator adopts that ending instead of writing its own.
"""

from __future__ import annotations

from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import GROUP, VERSION
from agent_mesh.domain.tasks import TaskState
from agent_mesh.kube.status_writer import StatusWriter
from agent_mesh.kube.status_writer import WriteResult as WriteResult

CONCURRENCY: Final = 32
PLURAL: Final = "meshtasks"


class TaskStatusWriter(StatusWriter):
    """Writes MeshTask status (bounded concurrency) and deletes finished tasks (TTL)."""

    def __init__(self, api: client.ApiClient) -> None:
        super().__init__(api, PLURAL, CONCURRENCY)

    async def write(
        self, state: TaskState, status: dict[str, Any], resource_version: str | None
    ) -> tuple[WriteResult, dict[str, Any] | None]:
        """(WRITTEN, the patched object), (GONE, None) when the task was deleted, or
        (CONFLICT, the current object) when someone wrote since `resource_version`."""
        assert state.name is not None
        return await self.patch_status(state.namespace, state.name, status, resource_version)

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
