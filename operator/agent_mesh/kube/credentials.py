"""External agents' credentials: a random secret the agent exchanges for mesh tokens.

The operator writes it once into a Secret owned by the MeshAgent (so it goes with it) and
keeps only its SHA-256 in status; it never reads the Secret back to authenticate.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import API_VERSION
from agent_mesh.auth.authority import credential_hash
from agent_mesh.domain.clock import rfc3339
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
        owners = existing.metadata.owner_references or []
        stored = (existing.data or {}).get(CREDENTIAL_KEY)
        if not stored or not any(o.uid == meta["uid"] for o in owners):
            # Not ours (left from a deleted agent of the same name, or a user's): replace it.
            await core.delete_namespaced_secret(secret_name, namespace)
            await core.create_namespaced_secret(namespace, body)
        else:
            credential = base64.b64decode(stored).decode()
    return {
        "secretName": secret_name,
        "sha256": credential_hash(credential),
        "issuedAt": rfc3339(now),
    }
