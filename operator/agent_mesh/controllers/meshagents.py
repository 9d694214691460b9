"""MeshAgent handlers: registration in status, the registry every mesh call checks
identities against, external agents' credentials, managed agents' children (StatefulSet,
Service, the tailscale sidecar's RBAC) with the TailnetConnected condition, and token
revocation on deletion."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from agent_mesh.api import GROUP, VERSION
from agent_mesh.api.meshagent import MeshAgentCondition, Network, agent_record
from agent_mesh.api.meshagent_status import (
    credential_conditions,
    endpoint_patch,
    registration_patch,
    tailnet_conditions,
)
from agent_mesh.config import OperatorConfig
from agent_mesh.controllers.services import MeshServices
from agent_mesh.controllers.tailnet import (
    identity_changes,
    injected_on_tailnet,
    observation,
    on_tailnet,
    with_new_ips,
)
from agent_mesh.controllers.workloads import apply_children
from agent_mesh.domain.agents import AgentRecord
from agent_mesh.domain.clock import parse_rfc3339
from agent_mesh.domain.conditions import get_condition
from agent_mesh.domain.discovery import resolve_endpoint
from agent_mesh.domain.egress import EgressClass
from agent_mesh.domain.errors import ConflictError, EgressRefusedError, MeshError, ValidationError
from agent_mesh.kube import workloads
from agent_mesh.kube.credentials import ensure_credential, record_credential, rotate_credential
from agent_mesh.transport.control_server import ControlServerError

logger = logging.getLogger(__name__)

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
            runtime.devices.forget(removed.namespace, removed.name)
            await deregister(runtime, removed.namespace, removed.agent_id, removed.name)
            if removed.tailnet_device is not None:
                await remove_device(runtime, removed)
    else:
        record = agent_record(body)
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
    # A step of registration, not a creation handler of its own: kopf records the handled
    # spec when every creation handler is done, from the newest body, so a second handler
    # (a second cycle) would let a spec changed meanwhile go unhandled.
    await revoke_tokens(
        body=body, spec=spec, status=status, meta=meta, patch=patch, logger=logger, memo=memo
    )
    now = runtime.clock.now()
    changes = registration_patch(status, meta.get("generation"), now)
    endpoint = resolve_endpoint(agent_record(body), None)
    if endpoint and status.get("endpoint") != endpoint:
        changes["endpoint"] = endpoint
    if spec.get("endpoint"):
        refusal = await endpoint_refusal(runtime, str(spec["endpoint"]))
        endpoint_patch(status, changes, refusal, meta.get("generation"), now)
        if refusal is not None:
            logger.warning("%s", refusal)
            kopf.event(body, type="Warning", reason="EndpointRefused", message=refusal[:1024])
    config: OperatorConfig = memo.config
    problem = (
        await reconcile_workload(runtime, config, body, logger)
        if has_children(spec, status, config)
        else None
    )
    before = changes.get("conditions", list(status.get("conditions") or []))
    settings = on_tailnet(body, config) or injected_on_tailnet(body, config)
    seen = await observation(runtime.devices, settings, body) if settings and not problem else None
    tailnet = tailnet_conditions(
        before,
        tailscale=(spec.get("network") or config.default_network) == Network.TAILSCALE.value,
        managed=spec.get("workload") is not None,
        configured=config.sidecar_settings() is not None,
        problem=problem,
        generation=meta.get("generation"),
        now=now,
        observed=seen.condition if seen else None,
    )
    if tailnet != before:
        changes["conditions"] = tailnet
    if seen is not None:
        changes.update(identity_changes(body, seen, tailnet, config))
        following = with_new_ips(body, changes)
        if following is not None:  # a device that came up while the children were applied
            await apply_children(runtime, config, following)
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


def has_children(spec: kopf.Spec, status: kopf.Status, config: OperatorConfig) -> bool:
    """Whether the agent has (or had) children of the operator's: a managed agent's; a
    tailscale agent's sidecar objects for its injected pods; those of one that was on the
    tailnet (its TailnetConnected condition stays), to be removed."""
    network = spec.get("network") or config.default_network
    return bool(
        spec.get("workload")
        or network == Network.TAILSCALE.value
        or get_condition(
            list(status.get("conditions") or []), MeshAgentCondition.TAILNET_CONNECTED.value
        )
    )


async def reconcile_workload(
    runtime: MeshServices, config: OperatorConfig, body: kopf.Body, logger: kopf.Logger
) -> str | None:
    """Apply a managed agent's children; why they were refused (also as a Warning Event),
    or None. An apiserver failure raises, and kopf retries."""
    try:
        await apply_children(runtime, config, body)
    except MeshError as refused:
        if not isinstance(refused, ValidationError):
            raise
        problem = refused.message
    except workloads.ChildRefused as refused:
        problem = str(refused)
    else:
        return None
    logger.warning("workload refused: %s", problem)
    kopf.event(body, type="Warning", reason="WorkloadRefused", message=problem[:1024])
    return problem


@kopf.on.resume(GROUP, VERSION, "meshagents")
@kopf.on.update(GROUP, VERSION, "meshagents", field="spec.credentialRotation")
async def rotate(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    logger: kopf.Logger,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """spec.credentialRotation changed: a fresh credential in the Secret, the old one
    refused, and every token issued before revoked. A credential not issued yet is issued
    by `register`, for the current value."""
    runtime: MeshServices = memo.runtime
    wanted = spec.get("credentialRotation")
    current = status.get("credential") or {}
    if not wanted or not spec.get("endpoint") or not current or current.get("rotation") == wanted:
        return
    namespace, agent_id = meta["namespace"], spec.get("agentId") or meta["name"]
    try:
        fresh = await rotate_credential(runtime.api, dict(body), runtime.clock.now())
    except ConflictError as refused:
        kopf.event(body, type="Warning", reason=refused.code, message=refused.message)
        raise kopf.TemporaryError(refused.message, delay=CREDENTIAL_RETRY_SECONDS) from None
    if current.get("sha256"):
        runtime.authority.retire_credential(namespace, agent_id, str(current["sha256"]))
    patched = await record_credential(runtime.api, namespace, meta["name"], fresh)
    runtime.registry.upsert(agent_record(patched))
    await runtime.authority.revoke_agent(
        namespace, agent_id, actor=f"operator (credential rotated: {wanted})"
    )
    logger.info("credential of agent %s rotated (%s)", agent_id, wanted)
    kopf.event(
        body,
        type="Normal",
        reason="CredentialRotated",
        message=f"New credential in Secret {fresh['secretName']} (rotation {wanted}); the old "
        "one and every token issued before are refused.",
    )


async def revoke_tokens(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    logger: kopf.Logger,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """spec.revokeTokensIssuedBefore: revoke the agent's tokens issued before it (a moment
    in the future counts as now), once per value (status.tokensRevokedBefore)."""
    runtime: MeshServices = memo.runtime
    wanted = parse_rfc3339(spec.get("revokeTokensIssuedBefore"))
    if wanted is None or parse_rfc3339(status.get("tokensRevokedBefore")) == wanted:
        return
    namespace, agent_id = meta["namespace"], spec.get("agentId") or meta["name"]
    before = await runtime.authority.revoke_agent(
        namespace,
        agent_id,
        actor="MeshAgent spec.revokeTokensIssuedBefore",
        before=min(wanted, runtime.clock.now()),
    )
    patch.status["tokensRevokedBefore"] = spec["revokeTokensIssuedBefore"]
    logger.info("tokens of agent %s issued before %s revoked", agent_id, before.isoformat())
    kopf.event(
        body,
        type="Normal",
        reason="TokensRevoked",
        message=f"Tokens of agent {agent_id} issued before {before.isoformat()} are refused.",
    )


async def endpoint_refusal(runtime: MeshServices, endpoint: str) -> str | None:
    """Why the egress policy refuses spec.endpoint now (its host resolved), or None. The
    admission webhook already refused what needs no DNS; dispatch checks again."""
    try:
        await runtime.egress.check(EgressClass.DECLARED, endpoint, "spec.endpoint")
    except EgressRefusedError as error:
        return error.message
    return None


async def remove_device(runtime: MeshServices, agent: AgentRecord) -> None:
    """Remove a deleted agent's device from the control server (when the operator has its
    API), so its name is free for the next agent. A failure is logged, not retried: no
    finalizer holds the MeshAgent for it (the control server's own expiry is the backstop)."""
    if runtime.control_server is None or agent.tailnet_device is None:
        return
    device_id, hostname = agent.tailnet_device
    try:
        outcome = await runtime.control_server.remove_device(device_id, hostname)
    except ControlServerError as error:
        logger.warning("device %s (%s) not removed: %s", device_id, hostname, error)
        return
    runtime.audit.record(
        "agent.device_removed",
        f"tailnet device {hostname} of agent {agent.ref}: {outcome}",
        agentId=agent.agent_id,
        namespace=agent.namespace,
        deviceId=device_id,
        outcome=str(outcome),
    )


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
