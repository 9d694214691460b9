"""The CA bundle agents verify the mesh API with, published as the ConfigMap
`agent-mesh-ca.crt` (key `ca.crt`) in the operator's namespace and in every namespace where
a MeshAgent appears, as Kubernetes publishes `kube-root-ca.crt`. Pods mount it and point
AGENT_MESH_CA_FILE at it.

Writes are few: a namespace is written once per bundle (a read first; nothing is written
when the ConfigMap already holds it); a periodic verify re-reads them all and repairs the
ones that were edited or deleted. All of it runs in one background task, off the watch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.kube.keystore import MANAGED_LABELS
from agent_mesh.pki import CA_BUNDLE_CONFIGMAP, CA_BUNDLE_KEY

logger = logging.getLogger("agent_mesh.tls")


class CaBundlePublisher:
    """Keeps the bundle ConfigMap current in every namespace it has been told about."""

    def __init__(self, api: client.ApiClient, name: str = CA_BUNDLE_CONFIGMAP) -> None:
        self._core = client.CoreV1Api(api)
        self.name = name
        self.bundle: str | None = None
        self.writes = 0
        """ConfigMaps created or replaced so far (reads are not counted)."""
        self._known: set[str] = set()
        self._current: set[str] = set()  # namespaces known to hold self.bundle
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def notice(self, namespace: str) -> None:
        """A MeshAgent lives in `namespace`: publish there (soon, in the background).
        Cheap enough to call on every watch event."""
        if namespace and namespace not in self._known:
            self._known.add(namespace)
            self._wake.set()

    async def set_bundle(self, bundle: bytes) -> None:
        """The bundle changed (first load, or a cert-manager CA rotation): republish."""
        text = bundle.decode()
        if text != self.bundle:
            self.bundle = text
            self._current.clear()
            self._wake.set()

    async def run(self) -> None:
        """Publish whatever is pending, whenever something is."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.publish_pending()

    async def verify(self) -> None:
        """Re-read every namespace's ConfigMap and repair what changed (periodic)."""
        self._current.clear()
        await self.publish_pending()

    async def publish_pending(self) -> None:
        async with self._lock:
            for namespace in sorted(self._known - self._current):
                if self.bundle is None:
                    return
                try:
                    if await self._publish(namespace, self.bundle):
                        self._current.add(namespace)
                except ApiException as error:  # the next verify retries
                    logger.warning(
                        "could not publish ConfigMap %s/%s: %s %s",
                        namespace,
                        self.name,
                        error.status,
                        error.reason,
                    )

    async def _publish(self, namespace: str, bundle: str) -> bool:
        """True when the namespace holds `bundle` afterwards."""
        try:
            existing: Any = await self._core.read_namespaced_config_map(self.name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            existing = None
        if existing is not None and (existing.data or {}).get(CA_BUNDLE_KEY) == bundle:
            return True
        metadata: dict[str, Any] = {"name": self.name, "namespace": namespace}
        body: Any = {"metadata": metadata, "data": {CA_BUNDLE_KEY: bundle}}
        try:
            if existing is None:
                metadata["labels"] = MANAGED_LABELS
                await self._core.create_namespaced_config_map(namespace, body)
            else:
                metadata["labels"] = {**(existing.metadata.labels or {}), **MANAGED_LABELS}
                metadata["resourceVersion"] = existing.metadata.resource_version
                await self._core.replace_namespaced_config_map(self.name, namespace, body)
        except ApiException as error:
            if error.status == 409:  # changed under us: look again on the next round
                self._wake.set()
                return False
            if error.status == 404:  # the namespace is gone
                self._known.discard(namespace)
                return False
            raise
        self.writes += 1
        logger.info("published the mesh CA bundle as ConfigMap %s/%s", namespace, self.name)
        return True
