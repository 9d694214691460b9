"""Managed tailscale agents' devices as the apiserver shows them: the state Secret the
sidecar fills and the pod whose container status says whether the sidecar is up.

Cached for 30 s (the architecture's Tailscale status TTL): the periodic refresh reads the
apiserver at most that often per agent, while watch events on the Secret and the pod
replace the cached copy at once, so a sidecar dying is seen without waiting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.domain.clock import Clock
from agent_mesh.kube.errors import unavailable
from agent_mesh.tailscale import sidecar
from agent_mesh.tailscale.device import Device, SidecarState, device_from_secret, sidecar_state

TTL: Final = dt.timedelta(seconds=30)


def pod_name(agent_name: str) -> str:
    """The one pod of a managed agent's StatefulSet."""
    return f"{agent_name}-0"


@dataclass
class _Seen:
    secret: Mapping[str, str] | None
    pod: Mapping[str, Any] | None
    read_at: dt.datetime


class DeviceCache:
    """(namespace, MeshAgent name) → the state Secret's data and the agent's pod."""

    def __init__(self, api: client.ApiClient, clock: Clock) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self._clock = clock
        self._seen: dict[tuple[str, str], _Seen] = {}

    def notice_secret(
        self, namespace: str, agent_name: str, data: Mapping[str, str] | None
    ) -> None:
        """A watch event on the state Secret (None: deleted)."""
        seen = self._seen.get((namespace, agent_name))
        if seen is not None:
            seen.secret = data

    def notice_pod(self, namespace: str, agent_name: str, pod: Mapping[str, Any] | None) -> None:
        """A watch event on the agent's pod (None: deleted)."""
        seen = self._seen.get((namespace, agent_name))
        if seen is not None:
            seen.pod = pod

    def forget(self, namespace: str, agent_name: str) -> None:
        self._seen.pop((namespace, agent_name), None)

    async def get(
        self, namespace: str, agent_name: str
    ) -> tuple[Device | None, tuple[SidecarState, str]]:
        """The device and the sidecar's state: from the cache when read less than 30 s
        ago, else from the apiserver. UnavailableError when it fails."""
        key = (namespace, agent_name)
        seen = self._seen.get(key)
        now = self._clock.now()
        if seen is None or now - seen.read_at >= TTL:
            secret = await self._read(
                self._core.read_namespaced_secret, sidecar.state_secret_name(agent_name), namespace
            )
            pod = await self._read(self._core.read_namespaced_pod, pod_name(agent_name), namespace)
            seen = _Seen(secret.get("data") if secret else None, pod, now)
            self._seen[key] = seen
        return device_from_secret(seen.secret), sidecar_state(seen.pod)

    async def _read(self, read: Any, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            found = await read(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise unavailable(f"reading {name} in {namespace}", error) from error
        return dict(self._api.sanitize_for_serialization(found))
