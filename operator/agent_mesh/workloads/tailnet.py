"""A tailscale agent's tailnet identity in its status, built (managed agents, and injected
ones: their labelled pod's sidecar): from the device in its state Secret and the sidecar's
container state to `status.tailscale`, the endpoint
and the TailnetConnected verdict.

Connected means the sidecar is running and ready (not that the Secret has a device: it
keeps that after the sidecar dies) and the device carries the name the mesh dials: the
control server renames a device whose name is taken (`-1`), and the Secret is writable
by the agent's own pod, so a name other than the expected one is never dialled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from agent_mesh.api.meshagent import MeshAgentReason
from agent_mesh.tailscale.device import Device, SidecarState

_SIDECAR_REASONS: Final = {
    SidecarState.NO_POD: MeshAgentReason.AGENT_POD_MISSING,
    SidecarState.NOT_INJECTED: MeshAgentReason.SIDECAR_NOT_INJECTED,
    SidecarState.NOT_RUNNING: MeshAgentReason.SIDECAR_NOT_RUNNING,
    SidecarState.NOT_READY: MeshAgentReason.SIDECAR_NOT_READY,
}


@dataclass(frozen=True)
class Observation:
    """TailnetConnected for an agent whose sidecar the operator reads, and the device to
    show in its status."""

    connected: bool
    reason: MeshAgentReason
    message: str
    device: Device | None
    """Only a device with the expected MagicDNS name."""

    @property
    def condition(self) -> tuple[bool, str, str]:
        return self.connected, self.reason.value, self.message


MANAGED_FALLBACK: Final = "The mesh reaches the agent through its Service meanwhile."
INJECTED_FALLBACK: Final = (
    "The mesh reaches the agent through spec.endpoint or the endpoint its heartbeats report "
    "meanwhile."
)


def observe(
    expected_fqdn: str,
    device: Device | None,
    sidecar: tuple[SidecarState, str],
    *,
    fallback: str = MANAGED_FALLBACK,
) -> Observation:
    """Judge the agent's tailnet connection from the sidecar's state and its device;
    `fallback` says how the mesh reaches the agent while it is not connected."""
    named = device if device is not None and device.fqdn == expected_fqdn else None
    state, said = sidecar
    if state is not SidecarState.READY:
        return Observation(False, _SIDECAR_REASONS[state], f"{said} {fallback}", named)
    if device is None:
        return Observation(
            False,
            MeshAgentReason.WAITING_FOR_TAILNET_DEVICE,
            f"{said} Its state Secret has no device yet (device_id, device_fqdn, device_ips).",
            None,
        )
    if named is None:
        return Observation(
            False,
            MeshAgentReason.TAILNET_NAME_MISMATCH,
            f"The device is named {device.fqdn}, not {expected_fqdn}: the control server "
            "renames a device whose name another device has. Remove the stale device from "
            f"the control server. {fallback}",
            None,
        )
    return Observation(
        True,
        MeshAgentReason.TAILNET_DEVICE_READY,
        f"{said} Device {device.fqdn} ({', '.join(device.ips)}) is on the tailnet.",
        named,
    )


def tailnet_endpoint(fqdn: str, port: int) -> str:
    """Where the mesh reaches a connected agent: its MagicDNS name, served by the sidecar."""
    return f"http://{fqdn.rstrip('.')}:{port}"


def tailscale_status(device: Device) -> dict[str, Any]:
    """`status.tailscale` for the device."""
    return {
        "hostname": device.hostname,
        "dnsName": device.fqdn,
        "ips": list(device.ips),
        "deviceId": device.device_id,
    }
