"""External agents' credentials: a random secret the agent exchanges for mesh tokens.

The operator writes it once into a Secret owned by the MeshAgent (so it goes with it) and
keeps only its SHA-256 in status; it never reads the Secret back to authenticate. A Secret
of that name that the MeshAgent does not own (by ownerReference uid) is never adopted nor
replaced: whoever planted it would know the credential, and it may be somebody's data.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Sequence
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import API_VERSION
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
    """The status.credential for the agent: creates the Secret when missing, else hashes
    the one there (e.g. the operator stopped between creating it and writing status)."""
    meta = agent["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    secret_name = credential_secret_name(name)
    core = client.CoreV1Api(api)
    credential = secrets.token_urlsafe(32)
    body: Any = {
        "metadata": {
            "name": secret_name,
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
        stored = (existing.data or {}).get(CREDENTIAL_KEY)
        if not stored:  # ours, but without a credential: replace it
            await core.delete_namespaced_secret(secret_name, namespace)
            await core.create_namespaced_secret(namespace, body)
        else:
            credential = base64.b64decode(stored).decode()
    return {
        "secretName": secret_name,
        "sha256": credential_hash(credential),
        "issuedAt": rfc3339(now),
    }


def foreign_secret_problem(
    owners: Sequence[Any], agent_uid: str, namespace: str, agent_name: str
) -> str | None:
    """Why an existing `<name>-mesh-credential` Secret must not be adopted (None when the
    MeshAgent owns it). `owners` are its ownerReferences (objects with `uid` and `kind`)."""
    if any(getattr(owner, "uid", None) == agent_uid for owner in owners):
        return None
    secret = f"{namespace}/{credential_secret_name(agent_name)}"
    holders = ", ".join(
        f"{getattr(o, 'kind', '?')} {getattr(o, 'name', '?')} (uid {getattr(o, 'uid', '?')})"
        for o in owners
    )
    return (
        f"Secret {secret} exists but is not owned by MeshAgent {agent_name} (uid {agent_uid}"
        f"{'; owned by ' + holders if holders else '; it has no owner'}): the operator will "
        "not adopt a credential somebody else wrote. Delete or rename that Secret; the "
        "credential is issued once it is gone"
    )
