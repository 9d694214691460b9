"""Status writes from outside kopf handlers: merge patches on a kind's status subresource,
each guarded by the resourceVersion it was built from, so a write never lands on a version
it has not seen (MeshAgent status in kube/agent_status.py, MeshTask in kube/task_status.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import GROUP, VERSION


class WriteResult(StrEnum):
    """What became of one status write."""

    WRITTEN = "written"
    """The patch landed; the answer is the patched object (its new version)."""
    CONFLICT = "conflict"
    """Someone wrote since the resourceVersion sent; the answer is the object as it is now,
    to write again from."""
    GONE = "gone"
    """The object no longer exists."""


class StatusWriter:
    """Writes one kind's status with bounded concurrency; counts what it wrote."""

    def __init__(self, api: client.ApiClient, plural: str, concurrency: int) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._plural = plural
        self._limit = asyncio.Semaphore(concurrency)
        self.writes = 0

    async def patch_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None,
    ) -> tuple[WriteResult, dict[str, Any] | None]:
        """(WRITTEN, the patched object), (GONE, None) when the object was deleted, or
        (CONFLICT, the object as it is now) when someone wrote since `resource_version`."""
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        args = (GROUP, VERSION, namespace, self._plural, name)
        async with self._limit:
            try:
                answer = await self._custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
                    *args, body, _content_type="application/merge-patch+json"
                )
            except ApiException as error:
                if error.status == 404:
                    return WriteResult.GONE, None
                if error.status != 409:
                    raise
                try:
                    current = await self._custom.get_namespaced_custom_object(*args)
                except ApiException as again:
                    if again.status == 404:
                        return WriteResult.GONE, None
                    raise
                return WriteResult.CONFLICT, dict(current)
        self.writes += 1
        return WriteResult.WRITTEN, dict(answer)
