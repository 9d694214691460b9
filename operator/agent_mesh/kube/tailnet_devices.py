"""Tailscale agents' devices as the apiserver shows them: the state Secret the sidecar
fills and the pod whose container status says whether the sidecar is up — a managed
agent's StatefulSet pod `<name>-0`, or an injected agent's pods, found by their label
`agentmesh.io/agent=<name>` (not managed by agent-mesh).

Cached for 30 s (the architecture's Tailscale status TTL): the periodic refresh reads the
apiserver at most that often per agent, while watch events on the Secret and the pod
replace the cached copy at once, so a sidecar dying is seen without waiting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.domain.agents import AGENT_LABEL
from agent_mesh.domain.clock import Clock
from agent_mesh.kube.errors import unavailable
from agent_mesh.tailscale import sidecar
from agent_mesh.tailscale.device import Device, SidecarState, device_from_secret, sidecar_state
from agent_mesh.tailscale.injected_pod import injected_sidecar_state

TTL: Final = dt.timedelta(seconds=30)
_READS: Final = 3
"""Reads of one agent's state before giving up on one no watch event overtook."""


def pod_name(agent_name: str) -> str:
    """The one pod of a managed agent's StatefulSet."""
    return f"{agent_name}-0"


def injected_selector(agent_name: str) -> str:
    """The label selector of an injected agent's pods: the managed ones carry the label too."""
    return f"{AGENT_LABEL}={agent_name},app.kubernetes.io/managed-by!=agent-mesh"


class DeviceSource(Protocol):
    """What the handlers read of agents' devices (DeviceCache; fakes in unit tests)."""

    async def get(
        self, namespace: str, agent_name: str
    ) -> tuple[Device | None, tuple[SidecarState, str]]: ...

    async def get_injected(
        self, namespace: str, agent_name: str, service_account: str | None
    ) -> tuple[Device | None, tuple[SidecarState, str]]: ...


@dataclass
class _Seen:
    secret: Mapping[str, str] | None
    pods: dict[str, Mapping[str, Any]]
    """By name: the managed pod `<name>-0`, or every labelled pod of an injected agent."""
    injected: bool
    read_at: dt.datetime


class DeviceCache:
    """(namespace, MeshAgent name) → the state Secret's data and the agent's pod(s)."""

    def __init__(self, api: client.ApiClient, clock: Clock) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self._clock = clock
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._events: dict[tuple[str, str], int] = {}
        """Watch events per agent: a read that an event overtook is stale and not kept."""

    def notice_secret(
        self, namespace: str, agent_name: str, data: Mapping[str, str] | None
    ) -> None:
        """A watch event on the state Secret (None: deleted)."""
        self._overtake((namespace, agent_name))
        seen = self._seen.get((namespace, agent_name))
        if seen is not None:
            seen.secret = data

    def notice_pod(
        self,
        namespace: str,
        agent_name: str,
        pod_name: str,
        pod: Mapping[str, Any] | None,
        *,
        injected: bool = False,
    ) -> None:
        """A watch event on a pod of the agent (None: deleted): the managed pod, or
        (`injected`) one labelled for an agent without a workload."""
        self._overtake((namespace, agent_name))
        seen = self._seen.get((namespace, agent_name))
        if seen is None or seen.injected != injected:
            return
        if pod is None:
            seen.pods.pop(pod_name, None)
        else:
            seen.pods[pod_name] = pod

    def forget(self, namespace: str, agent_name: str) -> None:
        self._seen.pop((namespace, agent_name), None)
        self._events.pop((namespace, agent_name), None)

    def _overtake(self, key: tuple[str, str]) -> None:
        self._events[key] = self._events.get(key, 0) + 1

    async def get(
        self, namespace: str, agent_name: str
    ) -> tuple[Device | None, tuple[SidecarState, str]]:
        """A managed agent's device and sidecar state: from the cache when read less than
        30 s ago, else from the apiserver. UnavailableError when it fails."""
        seen = await self._fresh(namespace, agent_name, injected=False)
        return device_from_secret(seen.secret), sidecar_state(seen.pods.get(pod_name(agent_name)))

    async def get_injected(
        self, namespace: str, agent_name: str, service_account: str | None
    ) -> tuple[Device | None, tuple[SidecarState, str]]:
        """An injected agent's device and the state of the sidecar of its labelled pod
        (tailscale/injected_pod.py decides which), cached as `get`'s."""
        seen = await self._fresh(namespace, agent_name, injected=True)
        state = injected_sidecar_state(
            seen.pods.values(),
            agent_name=agent_name,
            namespace=namespace,
            service_account=service_account,
        )
        return device_from_secret(seen.secret), state

    async def _fresh(self, namespace: str, agent_name: str, *, injected: bool) -> _Seen:
        key = (namespace, agent_name)
        seen = self._seen.get(key)
        now = self._clock.now()
        if seen is not None and seen.injected == injected and now - seen.read_at < TTL:
            return seen
        for _ in range(_READS):
            events = self._events.get(key, 0)
            secret = await self._read(
                self._core.read_namespaced_secret, sidecar.state_secret_name(agent_name), namespace
            )
            pods = (
                await self._labelled(namespace, agent_name)
                if injected
                else await self._managed_pod(namespace, agent_name)
            )
            read = _Seen(secret.get("data") if secret else None, pods, injected, now)
            if self._events.get(key, 0) == events:
                self._seen[key] = read  # no watch event came while reading: current
                return read
            # a watch event overtook the read (the sidecar just changed): read again, or
            # answer without caching; the event's own refresh reads after it
        return read

    async def _managed_pod(self, namespace: str, agent_name: str) -> dict[str, Mapping[str, Any]]:
        name = pod_name(agent_name)
        pod = await self._read(self._core.read_namespaced_pod, name, namespace)
        return {name: pod} if pod is not None else {}

    async def _labelled(self, namespace: str, agent_name: str) -> dict[str, Mapping[str, Any]]:
        try:
            found = await self._core.list_namespaced_pod(
                namespace, label_selector=injected_selector(agent_name)
            )
        except ApiException as error:
            raise unavailable(f"listing the pods of {agent_name} in {namespace}", error) from error
        pods = [dict(self._api.sanitize_for_serialization(pod)) for pod in found.items]
        return {str(pod["metadata"]["name"]): pod for pod in pods}

    async def _read(self, read: Any, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            found = await read(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise unavailable(f"reading {name} in {namespace}", error) from error
        return dict(self._api.sanitize_for_serialization(found))
