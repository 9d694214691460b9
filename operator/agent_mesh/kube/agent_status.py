"""MeshAgent status writes from outside kopf handlers: health, lastSeen, activeTasks,
endpoint and the Ready condition, as merge patches on the status subresource."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import GROUP, VERSION
from agent_mesh.api.meshagent import MeshAgentCondition, MeshAgentReason
from agent_mesh.domain.agents import AgentRecord, record_from_body
from agent_mesh.domain.clock import rfc3339
from agent_mesh.domain.conditions import set_condition
from agent_mesh.domain.discovery import resolve_endpoint
from agent_mesh.domain.health import HealthStatus, StatusWrite

logger = logging.getLogger("agent_mesh.status")
CONCURRENCY: Final = 16

_READY: Final[Mapping[HealthStatus, tuple[str, MeshAgentReason, str]]] = {
    HealthStatus.PENDING: (
        "False",
        MeshAgentReason.AWAITING_HEARTBEAT,
        "Waiting for the agent's first heartbeat.",
    ),
    HealthStatus.HEALTHY: ("True", MeshAgentReason.AGENT_HEALTHY, "Heartbeats arrive on time."),
    HealthStatus.DEGRADED: (
        "False",
        MeshAgentReason.AGENT_DEGRADED,
        "Heartbeats are late; the agent gets no new tasks.",
    ),
    HealthStatus.UNREACHABLE: (
        "False",
        MeshAgentReason.AGENT_UNREACHABLE,
        "No heartbeat for too long; its running tasks fail over.",
    ),
}


def status_patch(record: AgentRecord, write: StatusWrite, now: dt.datetime) -> dict[str, Any]:
    """The status fields for `write`; Ready follows health."""
    patch: dict[str, Any] = {
        "healthStatus": write.health.value,
        "activeTasks": write.active_tasks,
    }
    if write.last_seen is not None:
        patch["lastSeen"] = rfc3339(write.last_seen)
    if write.completed_tasks or write.failed_tasks:
        patch["completedTasks"] = write.completed_tasks
        patch["failedTasks"] = write.failed_tasks
        if write.avg_execution_ms is not None:
            patch["avgExecutionMs"] = write.avg_execution_ms
    endpoint = resolve_endpoint(record, write.endpoint)
    if endpoint is not None:
        patch["endpoint"] = endpoint
    ready = _READY[write.health]
    current = [dict(c) for c in record.conditions]
    conditions = set_condition(
        current,
        MeshAgentCondition.READY.value,
        ready[0],
        ready[1].value,
        ready[2],
        generation=record.generation,
        now=now,
    )
    if conditions != current:
        patch["conditions"] = conditions
    return patch


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
                return WriteResult.CONFLICT, record_from_body(current)
        self.writes += 1
        return WriteResult.WRITTEN, record_from_body(written)
