"""Signing keys in a Secret of the operator's namespace, so they survive restarts and
every replica signs with the same key."""

from __future__ import annotations

import base64
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.auth.keys import KeyRing
from agent_mesh.domain.errors import UnavailableError
from agent_mesh.kube.errors import unavailable

KEYS_SECRET: Final = "agent-mesh-signing-keys"  # noqa: S105  (a Secret name)
ROTATE_ANNOTATION: Final = "agentmesh.io/rotate"
"""Set to any new value (e.g. a timestamp) to ask for a rotation now."""
HANDLED_ANNOTATION: Final = "agentmesh.io/rotation-handled"
MANAGED_LABELS: Final = {"app.kubernetes.io/managed-by": "agent-mesh"}


class SecretKeyStore:
    """Loads and saves the KeyRing as the Secret `agent-mesh-signing-keys`."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str = KEYS_SECRET) -> None:
        self._core = client.CoreV1Api(api)
        self.namespace = namespace
        self.name = name
        self.rotation_requested: str | None = None
        """The rotate annotation's value when it asks for a rotation not yet done."""

    async def load(self) -> KeyRing | None:
        try:
            secret = await self._core.read_namespaced_secret(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise unavailable(f"reading Secret {self.namespace}/{self.name}", error) from error
        annotations = secret.metadata.annotations or {}
        requested = annotations.get(ROTATE_ANNOTATION)
        handled = annotations.get(HANDLED_ANNOTATION)
        self.rotation_requested = requested if requested and requested != handled else None
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        return KeyRing.from_secret_data(data)

    async def save(self, ring: KeyRing) -> None:
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
        try:
            await self._core.replace_namespaced_secret(self.name, self.namespace, body)
        except ApiException as error:
            if error.status != 404:
                raise unavailable(f"writing Secret {self.namespace}/{self.name}", error) from error
            try:
                await self._core.create_namespaced_secret(self.namespace, body)
            except ApiException as create_error:
                if create_error.status == 404:
                    raise UnavailableError(
                        f"namespace {self.namespace} does not exist: create it, or point "
                        "--operator-namespace (AGENT_MESH_OPERATOR_NAMESPACE) at one that does",
                        field="operatorNamespace",
                        code="OperatorNamespaceMissing",
                    ) from create_error
                raise unavailable(
                    f"creating Secret {self.namespace}/{self.name}", create_error
                ) from create_error
