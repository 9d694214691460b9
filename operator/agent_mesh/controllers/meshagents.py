"""MeshAgent handlers. For now: registration (status pending, registeredAt, conditions)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from agent_mesh.api import GROUP, VERSION
from agent_mesh.controllers.meshagent_status import registration_patch
from agent_mesh.domain.clock import SystemClock

audit = logging.getLogger("agent_mesh.audit")
clock = SystemClock()


@kopf.on.resume(GROUP, VERSION, "meshagents")
@kopf.on.create(GROUP, VERSION, "meshagents")
@kopf.on.update(GROUP, VERSION, "meshagents", field="spec")
def register(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    changes = registration_patch(status, meta.get("generation"), clock.now())
    if not changes:
        return
    patch.status.update(changes)
    if "registeredAt" in changes:
        agent_id = spec.get("agentId") or meta["name"]
        logger.info("agent %s registered", agent_id)
        audit.info(
            "agent registered",
            extra={
                "event": "agent.registered",
                "agentId": agent_id,
                "k8s_ref": {
                    "kind": "MeshAgent",
                    "namespace": meta.get("namespace"),
                    "name": meta["name"],
                },
            },
        )
        kopf.event(
            body,
            type="Normal",
            reason="Registered",
            message=f"Agent {agent_id} registered; waiting for its first heartbeat.",
        )
