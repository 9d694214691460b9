"""MeshAgent handlers: registration in status, the registry every mesh call checks
identities against, external agents' credentials, and token revocation on deletion."""

from __future__ import annotations

from typing import Any

import kopf

from agent_mesh.api import GROUP, VERSION
from agent_mesh.controllers.meshagent_status import (
    credential_conditions,
    endpoint_patch,
    registration_patch,
)
from agent_mesh.controllers.services import MeshServices
from agent_mesh.domain.agents import record_from_body
from agent_mesh.domain.discovery import resolve_endpoint
from agent_mesh.domain.egress import EgressClass
from agent_mesh.domain.errors import ConflictError, EgressRefusedError
from agent_mesh.kube.credentials import ensure_credential

CREDENTIAL_RETRY_SECONDS = 10
"""How soon a refused credential Secret is looked at again."""


@kopf.on.event(GROUP, VERSION, "meshagents")
async def track(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Keep the registry in step with the watch (every change, status included)."""
    runtime: MeshServices = memo.runtime
    body = event["object"]
    if event["type"] == "DELETED":
        meta = body.get("metadata") or {}
        removed = runtime.registry.remove(
            meta.get("namespace", ""), meta.get("name", ""), meta.get("uid")
        )
        if removed is not None:
            runtime.health.gone(removed)
            runtime.coordinator.agent_gone(removed.namespace, removed.agent_id)
            await deregister(runtime, removed.namespace, removed.agent_id, removed.name)
    else:
        record = record_from_body(body)
        runtime.ca_bundles.notice(record.namespace)  # the mesh CA bundle, for its pods
        if runtime.registry.upsert(record):
            runtime.health.seen(record)
            runtime.coordinator.agent_seen(record)


@kopf.on.resume(GROUP, VERSION, "meshagents")
@kopf.on.create(GROUP, VERSION, "meshagents")
@kopf.on.update(GROUP, VERSION, "meshagents", field="spec")
async def register(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    logger: kopf.Logger,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    runtime: MeshServices = memo.runtime
    now = runtime.clock.now()
    changes = registration_patch(status, meta.get("generation"), now)
    endpoint = resolve_endpoint(record_from_body(body), None)
    if endpoint and status.get("endpoint") != endpoint:
        changes["endpoint"] = endpoint
    if spec.get("endpoint"):
        refusal = await endpoint_refusal(runtime, str(spec["endpoint"]))
        endpoint_patch(status, changes, refusal, meta.get("generation"), now)
        if refusal is not None:
            logger.warning("%s", refusal)
            kopf.event(body, type="Warning", reason="EndpointRefused", message=refusal[:1024])
    if spec.get("endpoint") and not status.get("credential"):
        old = changes.get("conditions", list(status.get("conditions") or []))
        try:
            changes["credential"] = await ensure_credential(runtime.api, dict(body), now)
        except ConflictError as refused:
            conditions = credential_conditions(old, refused.message, meta.get("generation"), now)
            patch.status.update({**changes, "conditions": conditions})
            kopf.event(body, type="Warning", reason=refused.code, message=refused.message)
            raise kopf.TemporaryError(refused.message, delay=CREDENTIAL_RETRY_SECONDS) from None
        logger.info("credential Secret %s ready", changes["credential"]["secretName"])
        changes["conditions"] = credential_conditions(old, None, meta.get("generation"), now)
    if not changes:
        return
    patch.status.update(changes)
    if "registeredAt" in changes:
        agent_id = spec.get("agentId") or meta["name"]
        logger.info("agent %s registered", agent_id)
        runtime.audit.record(
            "agent.registered",
            f"agent {meta.get('namespace')}/{agent_id} registered",
            agentId=agent_id,
            agentType=spec.get("agentType"),
            namespace=meta.get("namespace"),
            name=meta["name"],
        )
        kopf.event(
            body,
            type="Normal",
            reason="Registered",
            message=f"Agent {agent_id} registered; waiting for its first heartbeat.",
        )


async def endpoint_refusal(runtime: MeshServices, endpoint: str) -> str | None:
    """Why the egress policy refuses spec.endpoint now (its host resolved), or None. The
    admission webhook already refused what needs no DNS; dispatch checks again."""
    try:
        await runtime.egress.check(EgressClass.DECLARED, endpoint, "spec.endpoint")
    except EgressRefusedError as error:
        return error.message
    return None


async def deregister(runtime: MeshServices, namespace: str, agent_id: str, name: str) -> None:
    """Revoke the agent's tokens, persistently. No finalizer: if the operator misses the
    deletion, tokens are still bound to the deleted object's uid and stop verifying."""
    await runtime.authority.revoke_agent(namespace, agent_id, actor="operator (agent deleted)")
    runtime.audit.record(
        "agent.deregistered",
        f"agent {namespace}/{agent_id} deregistered",
        agentId=agent_id,
        namespace=namespace,
        name=name,
    )
