"""Tailscale agents' tailnet identity into their status: `status.tailscale`, the endpoint
and TailnetConnected, from the state Secret and the sidecar's container status — of a
managed agent's pod `<name>-0`, or of an injected agent's pod labelled
`agentmesh.io/agent=<name>` (tailscale/injected_pod.py says which when there are several).

Refreshed when the state Secret or the agent's pod changes (watch events), and every 30 s
by one operator-wide loop (never a kopf timer: that would put a finalizer on every
MeshAgent) from the device cache (kube/tailnet_devices.py, 30 s TTL). When the device's IPs
change, the children are re-applied before the status says so (`with_new_ips`): the serve
configuration has an entry per tailnet IP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Final

import kopf
from kubernetes_asyncio import client

from agent_mesh.api.meshagent import MeshAgentCondition, MeshAgentReason, Network, agent_record
from agent_mesh.api.meshagent_status import tailnet_conditions
from agent_mesh.config import OperatorConfig
from agent_mesh.controllers.services import MeshServices
from agent_mesh.controllers.workloads import apply_children
from agent_mesh.domain.agents import AGENT_LABEL, DEFAULT_PORT
from agent_mesh.domain.conditions import get_condition
from agent_mesh.domain.discovery import resolve_endpoint
from agent_mesh.domain.errors import MeshError
from agent_mesh.kube import workloads
from agent_mesh.kube.agent_status import WriteResult
from agent_mesh.kube.agents import read_meshagent
from agent_mesh.kube.status_writer import StatusWriter
from agent_mesh.kube.tailnet_devices import DeviceSource, pod_name
from agent_mesh.tailscale import sidecar
from agent_mesh.tailscale.names import fqdn
from agent_mesh.tailscale.sidecar import SidecarSettings
from agent_mesh.workloads.tailnet import (
    INJECTED_FALLBACK,
    MANAGED_FALLBACK,
    Observation,
    observe,
    tailnet_endpoint,
    tailscale_status,
)

REFRESH_SECONDS: Final = 30.0
logger = logging.getLogger(__name__)
_ATTEMPTS: Final = 3
_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
_MANAGED: Final[dict[str, Any]] = {
    _MANAGED_BY: "agent-mesh",
    AGENT_LABEL: kopf.PRESENT,
}


def on_tailnet(meshagent: Mapping[str, Any], config: OperatorConfig) -> SidecarSettings | None:
    """The sidecar settings when `meshagent` is a managed agent with the sidecar."""
    spec = meshagent.get("spec") or {}
    network = spec.get("network") or config.default_network
    if not spec.get("workload") or network != Network.TAILSCALE.value:
        return None
    return config.sidecar_settings()


def injected_on_tailnet(
    meshagent: Mapping[str, Any], config: OperatorConfig
) -> SidecarSettings | None:
    """The sidecar settings when `meshagent` is a tailscale agent without a workload whose
    labelled pods get the injected sidecar (it names their ServiceAccount)."""
    spec = meshagent.get("spec") or {}
    network = spec.get("network") or config.default_network
    if spec.get("workload") or network != Network.TAILSCALE.value:
        return None
    return config.sidecar_settings() if spec.get("serviceAccountName") else None


async def observation(
    devices: DeviceSource, settings: SidecarSettings, meshagent: Mapping[str, Any]
) -> Observation:
    """The agent's sidecar and device as the cache has them (at most 30 s old): a managed
    agent's, or an injected agent's (its labelled pod's sidecar)."""
    meta = meshagent.get("metadata") or {}
    spec = meshagent.get("spec") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    agent_id = spec.get("agentId") or name
    expected = fqdn(namespace, agent_id, settings.tailnet_domain)
    if spec.get("workload"):
        device, state = await devices.get(namespace, name)
        return observe(expected, device, state, fallback=MANAGED_FALLBACK)
    account = spec.get("serviceAccountName")
    device, state = await devices.get_injected(namespace, name, account)
    return observe(expected, device, state, fallback=INJECTED_FALLBACK)


def identity_changes(
    meshagent: Mapping[str, Any],
    seen: Observation,
    conditions: list[dict[str, Any]],
    config: OperatorConfig,
) -> dict[str, Any]:
    """`status.tailscale` and `status.endpoint` as they follow from `seen` and the
    TailnetConnected condition in `conditions`; only what changes. The endpoint is the
    MagicDNS URL only when the operator can dial the tailnet (AGENT_MESH_TAILNET_PROXY)."""
    status = dict(meshagent.get("status") or {})
    changes: dict[str, Any] = {}
    if seen.device is not None and status.get("tailscale") != tailscale_status(seen.device):
        changes["tailscale"] = tailscale_status(seen.device)
    port = int((meshagent.get("spec") or {}).get("port") or DEFAULT_PORT)
    dial = seen.connected and seen.device is not None and config.tailnet_proxy is not None
    wanted = tailnet_endpoint(seen.device.fqdn, port) if dial and seen.device else None
    after = {
        **meshagent,
        "status": {**status, **changes, "conditions": conditions, "endpoint": wanted},
    }
    endpoint = resolve_endpoint(agent_record(after), None)
    if endpoint and endpoint != status.get("endpoint"):
        changes["endpoint"] = endpoint
    elif endpoint is None and status.get("endpoint") and _was_tailnet(status, port):
        changes["endpoint"] = None  # an injected agent off the tailnet: no stale URL to dial
    return changes


def with_new_ips(meshagent: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any] | None:
    """The MeshAgent as it will be once `changes` are in its status, when they change its
    tailnet IPs; None when they do not. Its children are applied from this before the
    status is written (the serve configuration has an entry per tailnet IP): a status
    written first would leave them on the old IPs for good if the apply then failed, since
    every later pass finds the IPs unchanged."""
    status = meshagent.get("status") or {}
    if "tailscale" not in changes or changes["tailscale"]["ips"] == (
        (status.get("tailscale") or {}).get("ips")
    ):
        return None
    return {**meshagent, "status": {**status, "tailscale": changes["tailscale"]}}


def _was_tailnet(status: Mapping[str, Any], port: int) -> bool:
    """Whether status.endpoint is the MagicDNS URL of the device in status.tailscale."""
    shown = (status.get("tailscale") or {}).get("dnsName")
    return bool(shown) and status.get("endpoint") == tailnet_endpoint(str(shown), port)


async def refresh(
    runtime: MeshServices,
    config: OperatorConfig,
    meshagent: Mapping[str, Any],
    *,
    retry_refused: bool = False,
) -> None:
    """Write the agent's tailnet identity and TailnetConnected if they changed (retried on
    a conflicting write); re-apply its children when its tailnet IPs changed. An agent
    whose workload was refused keeps that verdict unless `retry_refused` (its children
    were just applied)."""
    settings = on_tailnet(meshagent, config) or injected_on_tailnet(meshagent, config)
    if settings is None:
        return
    writer = StatusWriter(runtime.api, "meshagents", 1)
    current: Mapping[str, Any] | None = meshagent
    for _ in range(_ATTEMPTS):
        if current is None:
            return
        status = current.get("status") or {}
        before = list(status.get("conditions") or [])
        held = get_condition(before, MeshAgentCondition.TAILNET_CONNECTED.value)
        refused = held is not None and held.get("reason") == MeshAgentReason.WORKLOAD_REFUSED
        if refused and not retry_refused:
            return  # the register handler or the timer says so until the children apply
        seen = await observation(runtime.devices, settings, current)
        meta = current.get("metadata") or {}
        conditions = tailnet_conditions(
            before,
            tailscale=True,
            managed=bool((current.get("spec") or {}).get("workload")),
            configured=True,
            problem=None,
            generation=meta.get("generation"),
            now=runtime.clock.now(),
            observed=seen.condition,
        )
        changes = identity_changes(current, seen, conditions, config)
        if conditions != before:
            changes["conditions"] = conditions
        if not changes:
            return
        following = with_new_ips(current, changes)
        if following is not None:
            await apply_children(runtime, config, following)
        result, answer = await writer.patch_status(
            meta["namespace"], meta["name"], changes, meta.get("resourceVersion")
        )
        if result is WriteResult.WRITTEN:
            return
        current = answer


async def _meshagent(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    return await read_meshagent(api, namespace, name)


async def _after_event(
    runtime: MeshServices, config: OperatorConfig, namespace: str, name: str
) -> None:
    meshagent = await _meshagent(runtime.api, namespace, name)
    if meshagent is not None and not (meshagent.get("metadata") or {}).get("deletionTimestamp"):
        await refresh(runtime, config, meshagent)


@kopf.on.event("v1", "secrets", labels=_MANAGED)
async def state_secret_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """The sidecar wrote its device (or the Secret went): refresh the agent's status."""
    meta = event["object"].get("metadata") or {}
    agent = (meta.get("labels") or {}).get(AGENT_LABEL, "")
    if meta.get("name") != sidecar.state_secret_name(agent):
        return
    runtime: MeshServices = memo.runtime
    gone = event["type"] == "DELETED"
    raw = event["object"].get("data")
    data = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
    runtime.devices.notice_secret(meta.get("namespace", ""), agent, None if gone else data)
    await _after_event(runtime, memo.config, meta.get("namespace", ""), agent)


@kopf.on.event("v1", "pods", labels={AGENT_LABEL: kopf.PRESENT})
async def agent_pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """An agent's pod changed (its sidecar started, became ready, died): refresh. A managed
    agent's pod is its StatefulSet's `<name>-0`; any other pod labelled for a tailscale
    agent without a workload is one of an injected agent's (the registry says which agents
    those are, so a direct agent's labelled pods cost no read)."""
    meta = event["object"].get("metadata") or {}
    labels = meta.get("labels") or {}
    agent, name = labels.get(AGENT_LABEL, ""), str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "")
    runtime: MeshServices = memo.runtime
    pod = None if event["type"] == "DELETED" else event["object"]
    if labels.get(_MANAGED_BY) == "agent-mesh":
        if name != pod_name(agent):
            return
        runtime.devices.notice_pod(namespace, agent, name, pod)
    else:
        record = runtime.registry.by_name(namespace, agent)
        config: OperatorConfig = memo.config
        network = (record.network or config.default_network) if record else None
        if record is None or record.workload or network != Network.TAILSCALE.value:
            return
        runtime.devices.notice_pod(namespace, agent, name, pod, injected=True)
    await _after_event(runtime, memo.config, namespace, agent)


async def refresh_agent(
    runtime: MeshServices, config: OperatorConfig, body: Mapping[str, Any]
) -> None:
    """Catch what the watches missed, at the cache's pace; bring the agent's copy of the
    auth key up to its source (a rotated key, or one created after the agent, reaches
    every agent within 30 s, injected ones included)."""
    settings = on_tailnet(body, config) or injected_on_tailnet(body, config)
    if settings is None:
        return
    meta = body.get("metadata") or {}
    try:
        if await workloads.auth_key_stale(runtime.api, meta["namespace"], meta["name"], settings):
            await workloads.reconcile(
                runtime.api, body, default_network=config.default_network, tailscale=settings
            )
            logger.info("auth key copied to %s", sidecar.auth_secret_name(meta["name"]))
        await refresh(runtime, config, body, retry_refused=True)
    except workloads.ChildRefused as refused:
        logger.warning("workload refused: %s", refused)
    except MeshError as error:
        logger.warning("tailnet status not refreshed: %s", error.message)


async def refresh_all(runtime: MeshServices, config: OperatorConfig) -> None:
    """One pass over the tailscale agents the registry knows, managed or injected (each
    read afresh)."""
    for record in list(runtime.registry):
        if (record.network or config.default_network) != Network.TAILSCALE.value:
            continue
        try:
            body = await _meshagent(runtime.api, record.namespace, record.name)
        except MeshError as error:
            logger.warning("tailnet status not refreshed: %s", error.message)
            continue
        if body is not None and not (body.get("metadata") or {}).get("deletionTimestamp"):
            await refresh_agent(runtime, config, body)


async def _refresh_forever(memo: kopf.Memo) -> None:
    while True:
        await asyncio.sleep(REFRESH_SECONDS)
        runtime: MeshServices | None = memo.get("runtime")
        if runtime is not None:
            await refresh_all(runtime, memo.config)


@kopf.on.startup()
async def start_periodic_refresh(memo: kopf.Memo, **_: Any) -> None:
    """One loop for the operator, not a kopf timer per MeshAgent: kopf puts its finalizer
    on every object a timer runs for, so each MeshAgent would outlive an uninstalled
    operator, stuck on it."""
    memo.tailnet_refresh = asyncio.create_task(_refresh_forever(memo))


@kopf.on.cleanup()
async def stop_periodic_refresh(memo: kopf.Memo, **_: Any) -> None:
    task: asyncio.Task[None] | None = memo.get("tailnet_refresh")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
