"""ACLPolicy handlers: keep the in-memory ACL index in step and say in status whether
each policy is in force (Accepted / Ready), including its siblings when one changes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import GROUP, VERSION
from agent_mesh.api.aclpolicy_status import policy_status_patch
from agent_mesh.controllers.services import MeshServices
from agent_mesh.domain.acl import policy_from_spec
from agent_mesh.domain.clock import parse_rfc3339
from agent_mesh.domain.errors import ValidationError

PLURAL = "aclpolicies"


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def apply_policy(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    old: Any,
    logger: kopf.Logger,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    runtime: MeshServices = memo.runtime
    namespace, name = meta["namespace"], meta["name"]
    agent_type = str(spec.get("agentType") or "")
    previous_type = (old or {}).get("agentType") if isinstance(old, dict) else None
    invalid = conflicts_with = None
    try:
        policy = policy_from_spec(namespace, name, spec)
    except ValidationError as error:
        runtime.policies.remove(namespace, name)
        invalid = error.message
        kopf.event(body, type="Warning", reason="InvalidPolicy", message=error.message)
        logger.warning("ACLPolicy %s/%s is invalid: %s", namespace, name, error.message)
    else:
        runtime.policies.upsert(namespace, name, _created(meta), policy)
        conflicts_with = runtime.policies.standing(namespace, name).conflicts_with
    changes = policy_status_patch(
        status,
        meta.get("generation"),
        runtime.clock.now(),
        agent_type=agent_type,
        invalid=invalid,
        conflicts_with=conflicts_with,
    )
    if changes:
        patch.status.update(changes)
    runtime.audit.record(
        "acl.policy_applied",
        f"ACLPolicy {namespace}/{name} for type {agent_type} applied",
        namespace=namespace,
        name=name,
        agentType=agent_type,
    )
    for kind in {agent_type, previous_type} - {None, ""}:
        await _refresh_siblings(runtime, namespace, str(kind), skip=name)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def forget_deleted(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    if event["type"] != "DELETED":
        return
    runtime: MeshServices = memo.runtime
    meta = event["object"].get("metadata") or {}
    spec = event["object"].get("spec") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    runtime.policies.remove(namespace, name)
    runtime.audit.record(
        "acl.policy_removed",
        f"ACLPolicy {namespace}/{name} removed",
        namespace=namespace,
        name=name,
        agentType=spec.get("agentType"),
    )
    await _refresh_siblings(runtime, namespace, str(spec.get("agentType") or ""), skip=name)


async def _refresh_siblings(
    runtime: MeshServices, namespace: str, agent_type: str, skip: str
) -> None:
    """A change to one policy can put another of the same type in or out of force."""
    api = client.CustomObjectsApi(runtime.api)
    for name in runtime.policies.affected(namespace, agent_type):
        if name == skip:
            continue
        try:
            current = await api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                continue
            raise
        standing = runtime.policies.standing(namespace, name)
        meta = current.get("metadata") or {}
        changes = policy_status_patch(
            current.get("status") or {},
            meta.get("generation"),
            runtime.clock.now(),
            agent_type=agent_type,
            conflicts_with=standing.conflicts_with,
        )
        if changes:
            # a merge patch: the client's default for a dict body is a JSON patch
            await api.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": changes},
                _content_type="application/merge-patch+json",
            )


def _created(meta: kopf.Meta) -> dt.datetime:
    return parse_rfc3339(meta.get("creationTimestamp")) or dt.datetime.now(dt.UTC)
