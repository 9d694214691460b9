"""Where the operator's certificates come from: its own CA in the Secret `agent-mesh-ca`
(created on first start by whichever operator gets there first), or a Secret cert-manager
keeps renewed (named by AGENT_MESH_TLS_SECRET), which the operator only reads."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.domain.errors import UnavailableError, ValidationError
from agent_mesh.kube.errors import operator_namespace_missing, unavailable
from agent_mesh.kube.keystore import MANAGED_LABELS
from agent_mesh.pki import CA_BUNDLE_KEY, CA_SECRET
from agent_mesh.pki.certs import KeyPair
from agent_mesh.pki.owner import IssuedMaterial

CA_KEY_KEY: Final = "ca.key"
_ATTEMPTS: Final = 3


class SecretCaStore:
    """The CA as the Secret `agent-mesh-ca` (ca.crt, ca.key) in the operator's namespace.
    Written only by create, or by a replace carrying the resourceVersion read, so two
    operators starting at once cannot overwrite each other: the loser adopts the winner's."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str = CA_SECRET) -> None:
        self._core = client.CoreV1Api(api)
        self.namespace = namespace
        self.name = name
        self.created = False
        """Whether this store made the CA (for logs and tests)."""

    async def load_or_create(self, generate: Callable[[], KeyPair]) -> KeyPair:
        for _ in range(_ATTEMPTS):
            secret = await self._read()
            data = _decoded(secret)
            if CA_BUNDLE_KEY in data and CA_KEY_KEY in data:
                return KeyPair(data[CA_BUNDLE_KEY], data[CA_KEY_KEY])
            if data:
                raise ValidationError(
                    f"Secret {self.namespace}/{self.name} has {', '.join(sorted(data))} but "
                    f"not both {CA_BUNDLE_KEY} and {CA_KEY_KEY}: complete it, or delete it "
                    "to have the operator make a new CA",
                    field=self.name,
                    code="CaSecretInvalid",
                )
            pair = generate()
            if await self._write(pair, secret):
                self.created = True
                return pair
            # another operator wrote it between our read and our write: adopt theirs
        raise UnavailableError(
            f"Secret {self.namespace}/{self.name} kept changing while the operator tried to "
            "adopt it",
            code="KubernetesUnavailable",
        )

    async def _read(self) -> Any:
        try:
            return await self._core.read_namespaced_secret(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise unavailable(f"reading Secret {self.namespace}/{self.name}", error) from error

    async def _write(self, pair: KeyPair, existing: Any) -> bool:
        """False when another writer won (409)."""
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": MANAGED_LABELS,
        }
        body: Any = {
            "metadata": metadata,
            "type": "Opaque",
            "data": {
                CA_BUNDLE_KEY: base64.b64encode(pair.cert_pem).decode(),
                CA_KEY_KEY: base64.b64encode(pair.key_pem).decode(),
            },
        }
        try:
            if existing is None:
                await self._core.create_namespaced_secret(self.namespace, body)
            else:  # an empty Secret prepared for us (e.g. by a chart): fill it, if unchanged
                metadata["resourceVersion"] = existing.metadata.resource_version
                metadata["labels"] = {**(existing.metadata.labels or {}), **MANAGED_LABELS}
                await self._core.replace_namespaced_secret(self.name, self.namespace, body)
        except ApiException as error:
            if error.status == 409:
                return False
            if error.status == 404 and existing is None:
                raise operator_namespace_missing(self.namespace) from error
            raise unavailable(f"writing Secret {self.namespace}/{self.name}", error) from error
        return True


class CertManagerSecret:
    """A Secret with tls.crt, tls.key and ca.crt (cert-manager's Certificate output),
    read on every check so its renewals are served without a restart."""

    KEYS: Final = ("tls.crt", "tls.key", CA_BUNDLE_KEY)

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self._core = client.CoreV1Api(api)
        self.namespace = namespace
        self.name = f"{namespace}/{name}"
        self._secret = name

    async def read(self) -> IssuedMaterial:
        try:
            secret = await self._core.read_namespaced_secret(self._secret, self.namespace)
        except ApiException as error:
            if error.status == 404:
                raise ValidationError(
                    f"Secret {self.name} named by AGENT_MESH_TLS_SECRET does not exist: "
                    "create its cert-manager Certificate first, or unset the setting to use "
                    "the operator's own CA",
                    field="tlsSecret",
                    code="TlsSecretMissing",
                ) from error
            raise unavailable(f"reading Secret {self.name}", error) from error
        data = _decoded(secret)
        missing = [key for key in self.KEYS if not data.get(key)]
        if missing:
            raise ValidationError(
                f"Secret {self.name} named by AGENT_MESH_TLS_SECRET lacks "
                f"{', '.join(missing)} (it needs tls.crt, tls.key and ca.crt, as "
                "cert-manager writes them for a CA issuer)",
                field="tlsSecret",
                code="TlsSecretInvalid",
            )
        return IssuedMaterial(KeyPair(data["tls.crt"], data["tls.key"]), data[CA_BUNDLE_KEY])


def _decoded(secret: Any) -> dict[str, bytes]:
    if secret is None:
        return {}
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items() if value}
