"""An async Kubernetes API client configured the way kopf is: in-cluster, else kubeconfig."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from kubernetes_asyncio import client, config


@contextlib.asynccontextmanager
async def api_client() -> AsyncIterator[client.ApiClient]:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
    async with client.ApiClient() as api:
        yield api
