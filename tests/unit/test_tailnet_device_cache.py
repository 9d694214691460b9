"""The operator's cache of agents' tailnet state: a watch event that comes while the
cache is reading wins over that read (the read started before the change it reports)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from agent_mesh.domain.clock import SystemClock
from agent_mesh.kube.tailnet_devices import DeviceCache
from agent_mesh.tailscale.device import SidecarState


def pod(*, ready: bool) -> dict[str, Any]:
    sidecar = {"name": "tailscale", "ready": ready, "state": {"running": {}} if ready else {}}
    return {"metadata": {"name": "summ-0"}, "status": {"containerStatuses": [sidecar]}}


class SlowCore:
    """The apiserver as the cache reads it; the first pod read answers what the pod was
    when the read started, but only once `release` is set (a slow, loaded apiserver)."""

    def __init__(self) -> None:
        self.pods = {"summ-0": pod(ready=False)}
        self.release = asyncio.Event()
        self.reading = asyncio.Event()
        self.pod_reads = 0

    async def read_namespaced_secret(self, name: str, namespace: str) -> dict[str, Any]:
        return {"data": {}}

    async def read_namespaced_pod(self, name: str, namespace: str) -> dict[str, Any]:
        self.pod_reads += 1
        then = copy.deepcopy(self.pods[name])
        if self.pod_reads == 1:
            self.reading.set()
            await self.release.wait()
        return then


@pytest.fixture
async def api() -> AsyncIterator[client.ApiClient]:
    """Never talks to a cluster here: the cache's reads go to SlowCore."""
    api = client.ApiClient()
    yield api
    await api.close()


async def test_a_watch_event_during_a_read_is_not_lost_to_that_reads_older_answer(
    api: client.ApiClient,
) -> None:
    cache = DeviceCache(api, SystemClock())
    core = SlowCore()
    cache._core = core  # type: ignore[assignment]  # the apiserver, slowed
    reading = asyncio.create_task(cache.get("research", "summ"))
    await asyncio.wait_for(core.reading.wait(), 5)
    # the sidecar turns ready, and its watch event arrives, while the read is in flight
    core.pods["summ-0"] = pod(ready=True)
    cache.notice_pod("research", "summ", "summ-0", pod(ready=True))
    core.release.set()
    _, (state, _) = await asyncio.wait_for(reading, 5)
    assert state is SidecarState.READY  # read again: the first answer was overtaken
    assert core.pod_reads == 2
    _, (cached, _) = await cache.get("research", "summ")
    assert cached is SidecarState.READY and core.pod_reads == 2  # and kept


async def test_a_read_no_event_overtook_is_kept_for_the_ttl(api: client.ApiClient) -> None:
    cache = DeviceCache(api, SystemClock())
    core = SlowCore()
    core.release.set()
    cache._core = core  # type: ignore[assignment]
    _, (first, _) = await cache.get("research", "summ")
    _, (again, _) = await cache.get("research", "summ")
    assert first is again is SidecarState.NOT_RUNNING
    assert core.pod_reads == 1
