"""What the handlers use of the operator's long-lived services. runtime.MeshRuntime
provides it and kopf hands it to every handler as `memo.runtime`; the handlers never
import the runtime, which sits above them and imports them to register them."""

from __future__ import annotations

from typing import Protocol

from kubernetes_asyncio import client

from agent_mesh.auth.audit import AuditLog
from agent_mesh.auth.authority import Authority
from agent_mesh.coordinator import Coordinator
from agent_mesh.domain.acl import PolicyIndex
from agent_mesh.domain.agents import AgentRegistry
from agent_mesh.domain.clock import Clock
from agent_mesh.health.monitor import HealthMonitor
from agent_mesh.kube.ca_bundle import CaBundlePublisher
from agent_mesh.kube.tailnet_devices import DeviceCache
from agent_mesh.transport.control_server import ControlServer
from agent_mesh.transport.egress import EgressGuard


class MeshServices(Protocol):
    api: client.ApiClient
    clock: Clock
    registry: AgentRegistry
    policies: PolicyIndex
    audit: AuditLog
    authority: Authority
    egress: EgressGuard
    health: HealthMonitor
    coordinator: Coordinator
    ca_bundles: CaBundlePublisher
    devices: DeviceCache
    control_server: ControlServer | None
