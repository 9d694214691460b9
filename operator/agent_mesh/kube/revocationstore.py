"""Revocations in a ConfigMap of the operator's namespace: they must outlive the operator.

Writes merge with what is stored (optimistic concurrency on resourceVersion), so two
writers never drop each other's revocations, and drop the entries that have expired.
Documents written before revocations were scoped to namespaces are read as they were
meant (see auth/revocation.py) and rewritten in the new form on the next write.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.auth.revocation import RevocationList
from agent_mesh.domain.errors import UnavailableError
from agent_mesh.kube.errors import unavailable
from agent_mesh.kube.keystore import MANAGED_LABELS

REVOCATIONS_CONFIGMAP: Final = "agent-mesh-revocations"
DATA_KEY: Final = "revocations.json"
ATTEMPTS: Final = 5


class ConfigMapRevocationStore:
    """Loads and saves the RevocationList as the ConfigMap `agent-mesh-revocations`."""

    def __init__(
        self, api: client.ApiClient, namespace: str, name: str = REVOCATIONS_CONFIGMAP
    ) -> None:
        self._core = client.CoreV1Api(api)
        self.namespace = namespace
        self.name = name

    async def _read(self) -> tuple[RevocationList, str | None]:
        try:
            cm = await self._core.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return RevocationList(), None
            raise unavailable(f"reading ConfigMap {self.namespace}/{self.name}", error) from error
        text = (cm.data or {}).get(DATA_KEY)
        stored = RevocationList.from_json(text) if text else RevocationList()
        return stored, cm.metadata.resource_version

    async def load(self) -> RevocationList:
        return (await self._read())[0]

    async def save(self, revocations: RevocationList, now: dt.datetime) -> RevocationList:
        """Write the union of `revocations` and what is stored, less the entries expired
        at `now`; what was written."""
        for _ in range(ATTEMPTS):
            stored, version = await self._read()
            stored.merge(revocations)
            stored.prune(now)
            body: Any = {
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "labels": MANAGED_LABELS,
                    **({"resourceVersion": version} if version else {}),
                },
                "data": {DATA_KEY: stored.to_json()},
            }
            try:
                if version is None:
                    await self._core.create_namespaced_config_map(self.namespace, body)
                else:
                    await self._core.replace_namespaced_config_map(self.name, self.namespace, body)
            except ApiException as error:
                if error.status == 409:  # someone else wrote in between: merge again
                    continue
                raise unavailable(
                    f"writing ConfigMap {self.namespace}/{self.name}", error
                ) from error
            return stored
        raise UnavailableError(
            f"ConfigMap {self.namespace}/{self.name} kept changing; revocation not persisted",
            code="RevocationConflict",
        )
