"""Signing keys in a Secret of the operator's namespace, so they survive restarts and
every replica signs with the same key.

Writes carry the resourceVersion last read or written (optimistic concurrency): when two
operators rotate at once, the second write is refused (409) and that operator adopts the
ring the first stored instead of overwriting it, so no key that signed a token is lost.
A 409 caused by something else (an annotation, a label) is retried on the new version.
"""

from __future__ import annotations

import base64
import logging
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.auth.keys import KeyRing
from agent_mesh.domain.errors import UnavailableError
from agent_mesh.kube.errors import operator_namespace_missing, unavailable

KEYS_SECRET: Final = "agent-mesh-signing-keys"  # noqa: S105  (a Secret name)
ROTATE_ANNOTATION: Final = "agentmesh.io/rotate"
"""Set to any new value (e.g. a timestamp) to ask for a rotation now."""
HANDLED_ANNOTATION: Final = "agentmesh.io/rotation-handled"
MANAGED_LABELS: Final = {"app.kubernetes.io/managed-by": "agent-mesh"}
ATTEMPTS: Final = 5
logger = logging.getLogger("agent_mesh.auth")


class SecretKeyStore:
    """Loads and saves the KeyRing as the Secret `agent-mesh-signing-keys`."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str = KEYS_SECRET) -> None:
        self._core = client.CoreV1Api(api)
        self.namespace = namespace
        self.name = name
        self.rotation_requested: str | None = None
        """The rotate annotation's value when it asks for a rotation not yet done."""
        self._version: str | None = None
        """resourceVersion of the Secret as last read or written (None: not seen)."""
        self._kids: frozenset[str] | None = None
        """The key ids stored in that version."""

    async def load(self) -> KeyRing | None:
        try:
            secret = await self._core.read_namespaced_secret(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                self._version, self._kids = None, None
                return None
            raise unavailable(f"reading Secret {self.namespace}/{self.name}", error) from error
        return self._seen(secret)

    def _seen(self, secret: Any) -> KeyRing:
        """Remember the version read; the ring it holds."""
        annotations = secret.metadata.annotations or {}
        requested = annotations.get(ROTATE_ANNOTATION)
        handled = annotations.get(HANDLED_ANNOTATION)
        self.rotation_requested = requested if requested and requested != handled else None
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        ring = KeyRing.from_secret_data(data)
        self._version = secret.metadata.resource_version
        self._kids = frozenset(ring.verifying)
        return ring

    async def save(self, ring: KeyRing) -> KeyRing:
        """Store `ring` on the version last seen; returns what is stored: `ring`, or the
        ring another writer stored since (adopted, not overwritten)."""
        for _ in range(ATTEMPTS):
            based_on = self._kids
            if await self._write(ring):
                return ring
            stored = await self.load()  # someone wrote since: what changed?
            if stored is not None and self._kids != based_on:
                logger.info(
                    "another operator stored signing keys first (active %s): adopting them",
                    stored.active.kid,
                )
                return stored
        raise UnavailableError(
            f"Secret {self.namespace}/{self.name} kept changing; signing keys not saved",
            code="KeyStoreContention",
        )

    async def _write(self, ring: KeyRing) -> bool:
        """One write on the version last seen: True when it landed, False on a conflict."""
        annotations = {}
        if self.rotation_requested is not None:  # saving the rotation answers the request
            annotations = {
                ROTATE_ANNOTATION: self.rotation_requested,
                HANDLED_ANNOTATION: self.rotation_requested,
            }
            self.rotation_requested = None
        body: Any = {
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": MANAGED_LABELS,
                "annotations": annotations,
            },
            "type": "Opaque",
            "stringData": ring.to_secret_data(),
        }
        if self._version is not None:
            body["metadata"]["resourceVersion"] = self._version
            try:
                written = await self._core.replace_namespaced_secret(
                    self.name, self.namespace, body
                )
            except ApiException as error:
                if error.status in (404, 409):  # deleted, or changed, since we looked
                    return False
                raise unavailable(f"writing Secret {self.namespace}/{self.name}", error) from error
        else:
            try:
                written = await self._core.create_namespaced_secret(self.namespace, body)
            except ApiException as create_error:
                if create_error.status == 409:  # created by another writer meanwhile
                    return False
                if create_error.status == 404:
                    raise operator_namespace_missing(self.namespace) from create_error
                raise unavailable(
                    f"creating Secret {self.namespace}/{self.name}", create_error
                ) from create_error
        self._version = written.metadata.resource_version
        self._kids = frozenset(ring.verifying)
        return True
