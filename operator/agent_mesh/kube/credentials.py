"""External agents' credentials: a random secret the agent exchanges for mesh tokens.

The operator writes it once into a Secret owned by the MeshAgent (so it goes with it) and
keeps only its SHA-256 in status; it never reads the Secret back to authenticate. A Secret
of that name that the MeshAgent does not own (by ownerReference uid) is never adopted nor
replaced: whoever planted it would know the credential, and it may be somebody's data.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import secrets
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import API_VERSION, GROUP, VERSION
from agent_mesh.auth.authority import credential_hash
from agent_mesh.domain.clock import rfc3339
from agent_mesh.domain.errors import ConflictError
from agent_mesh.kube.errors import unavailable
from agent_mesh.kube.keystore import MANAGED_LABELS

CREDENTIAL_KEY: Final = "credential"


def credential_secret_name(agent_name: str) -> str:
    return f"{agent_name}-mesh-credential"


async def ensure_credential(
    api: client.ApiClient, agent: dict[str, Any], now: dt.datetime
) -> dict[str, str]:
    """The status.credential for the agent: creates the Secret. One already there (the
    operator stopped between creating it and writing status; a deleted namesake's, not
    yet collected) is refused unless the MeshAgent, or a deleted namesake, owns it; even
    then only the object is kept, not its value: a fresh credential is written into it,
    unless the MeshAgent's status already records that value's hash (we issued it; a
    handler run on a stale body must not rotate it). An ownerReference is no proof
    (whoever may create Secrets can name any uid), so a value planted under a forged one
    is worth nothing."""
    meta = agent["metadata"]
    namespace, name, secret_name, core, credential, body = _fresh(api, agent)
    try:
        await core.create_namespaced_secret(namespace, body)
    except ApiException as error:
        if error.status != 409:
            raise unavailable(f"creating Secret {namespace}/{secret_name}", error) from error
        existing = await core.read_namespaced_secret(secret_name, namespace)
        problem = foreign_secret_problem(
            existing.metadata.owner_references or [], meta["uid"], namespace, name
        )
        if problem is not None:
            raise ConflictError(
                problem, field="spec.endpoint", code="CredentialSecretNotOwned"
            ) from None
        recorded = await _recorded_credential(api, namespace, name, meta["uid"], existing)
        if recorded is not None:
            return recorded  # this operator wrote both: a handler run on a stale body
        # ours, or a deleted namesake's: keep the object, never its value
        body["metadata"]["resourceVersion"] = existing.metadata.resource_version
        try:  # only if nobody changed it since we read it
            await core.replace_namespaced_secret(secret_name, namespace, body)
        except ApiException as replacing:
            raise unavailable(f"replacing Secret {namespace}/{secret_name}", replacing) from None
    return _credential_status(agent, credential, now)


async def rotate_credential(
    api: client.ApiClient, agent: dict[str, Any], now: dt.datetime
) -> dict[str, str]:
    """A fresh credential written into the agent's own Secret (spec.credentialRotation):
    the new status.credential. A Secret the MeshAgent does not own is refused as in
    `ensure_credential`; a missing one is created."""
    meta = agent["metadata"]
    namespace, name, secret_name, core, credential, body = _fresh(api, agent)
    try:
        existing = await core.read_namespaced_secret(secret_name, namespace)
    except ApiException as error:
        if error.status != 404:
            raise unavailable(f"reading Secret {namespace}/{secret_name}", error) from error
        existing = None
    try:
        if existing is None:
            await core.create_namespaced_secret(namespace, body)
        else:
            owners = existing.metadata.owner_references or []
            if not any(getattr(owner, "uid", None) == meta["uid"] for owner in owners):
                problem = foreign_secret_problem(owners, meta["uid"], namespace, name)
                raise ConflictError(
                    problem or f"Secret {namespace}/{secret_name} is not this MeshAgent's",
                    field="spec.credentialRotation",
                    code="CredentialSecretNotOwned",
                )
            body["metadata"]["resourceVersion"] = existing.metadata.resource_version
            await core.replace_namespaced_secret(secret_name, namespace, body)
    except ApiException as error:  # 409: changed (or created) since read; retried
        raise unavailable(f"writing Secret {namespace}/{secret_name}", error) from error
    return _credential_status(agent, credential, now)


class _Fresh(NamedTuple):
    """A new credential for an agent and the Secret body that holds it, not yet written."""

    namespace: str
    name: str
    secret_name: str
    core: client.CoreV1Api
    credential: str
    body: Any


def _fresh(api: client.ApiClient, agent: dict[str, Any]) -> _Fresh:
    meta = agent["metadata"]
    credential = secrets.token_urlsafe(32)
    return _Fresh(
        meta["namespace"],
        meta["name"],
        credential_secret_name(meta["name"]),
        client.CoreV1Api(api),
        credential,
        _secret_body(agent, credential),
    )


def _secret_body(agent: dict[str, Any], credential: str) -> Any:
    meta = agent["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    return {
        "metadata": {
            "name": credential_secret_name(name),
            "namespace": namespace,
            "labels": {**MANAGED_LABELS, "agentmesh.io/agent": name},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "MeshAgent",
                    "name": name,
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "type": "Opaque",
        "stringData": {
            CREDENTIAL_KEY: credential,
            "agentId": (agent.get("spec") or {}).get("agentId") or name,
            "namespace": namespace,
        },
    }


def _credential_status(agent: dict[str, Any], credential: str, now: dt.datetime) -> dict[str, str]:
    status = {
        "secretName": credential_secret_name(agent["metadata"]["name"]),
        "sha256": credential_hash(credential),
        "issuedAt": rfc3339(now),
    }
    rotation = (agent.get("spec") or {}).get("credentialRotation")
    if rotation:
        status["rotation"] = str(rotation)
    return status


async def _recorded_credential(
    api: client.ApiClient, namespace: str, name: str, uid: str, existing: Any
) -> dict[str, str] | None:
    """The MeshAgent's current status.credential when it already records the hash of the
    value in `existing`: only the operator writes status (the Secret's ownerReference
    proves nothing), so a matching hash means we issued that value, and rewriting it would
    invalidate a credential an agent may already hold."""
    stored = (existing.data or {}).get(CREDENTIAL_KEY)
    if not stored:
        return None
    try:
        current = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "meshagents", name
        )
    except ApiException as error:
        raise unavailable(f"reading MeshAgent {namespace}/{name}", error) from error
    if (current.get("metadata") or {}).get("uid") != uid:
        return None
    recorded = (current.get("status") or {}).get("credential") or {}
    value = base64.b64decode(stored).decode(errors="replace")
    if recorded.get("sha256") and hmac.compare_digest(
        str(recorded["sha256"]), credential_hash(value)
    ):
        return {k: str(v) for k, v in recorded.items()}
    return None


def foreign_secret_problem(
    owners: Sequence[Any], agent_uid: str, namespace: str, agent_name: str
) -> str | None:
    """Why an existing `<name>-mesh-credential` Secret must not be taken over; None when
    the MeshAgent owns it, or when its only owners are earlier MeshAgents of the same name
    (deleted: a name has one object at a time), which the garbage collector would remove.
    `owners` are its ownerReferences (objects with `api_version`, `kind`, `name`, `uid`)."""
    if any(getattr(owner, "uid", None) == agent_uid for owner in owners):
        return None
    if owners and all(_earlier_incarnation(owner, agent_name) for owner in owners):
        return None
    secret = f"{namespace}/{credential_secret_name(agent_name)}"
    holders = ", ".join(
        f"{getattr(o, 'kind', '?')} {getattr(o, 'name', '?')} (uid {getattr(o, 'uid', '?')})"
        for o in owners
    )
    return (
        f"Secret {secret} exists but is not owned by MeshAgent {agent_name} (uid {agent_uid}"
        f"{'; owned by ' + holders if holders else '; it has no owner'}): the operator will "
        "not take over a Secret somebody else wrote. Delete or rename it; the credential is "
        "issued once it is gone"
    )


def _earlier_incarnation(owner: Any, agent_name: str) -> bool:
    group = str(getattr(owner, "api_version", "")).partition("/")[0]
    return (
        group == GROUP
        and getattr(owner, "kind", None) == "MeshAgent"
        and getattr(owner, "name", None) == agent_name
    )


async def record_credential(
    api: client.ApiClient, namespace: str, name: str, credential: dict[str, str]
) -> dict[str, Any]:
    """Write status.credential now (not at the end of a kopf handler), so the new hash is
    in force before the old tokens are revoked; the patched MeshAgent."""
    try:
        patched: dict[str, Any] = await client.CustomObjectsApi(  # type: ignore[call-arg]
            api
        ).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            "meshagents",
            name,
            {"status": {"credential": credential}},
            _content_type="application/merge-patch+json",
        )
    except ApiException as error:
        raise unavailable(f"writing MeshAgent {namespace}/{name} status", error) from error
    return patched
