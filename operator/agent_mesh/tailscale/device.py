"""An agent's device as its sidecar reports it: the identity containerboot writes into
the state Secret, and whether the sidecar is up, judged from its container status.

The Secret keeps its fields after the sidecar dies, so it says who the device is, never
whether it is connected: that is the sidecar container's own health (running, and ready:
its readiness probe is containerboot's /healthz, 200 once the device has tailnet IPs).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent_mesh.tailscale.sidecar import CONTAINER_NAME


@dataclass(frozen=True)
class Device:
    """The device containerboot registered (state Secret keys device_id, device_fqdn,
    device_ips)."""

    device_id: str
    fqdn: str
    """MagicDNS name, without the trailing dot."""
    ips: tuple[str, ...]

    @property
    def hostname(self) -> str:
        return self.fqdn.split(".", 1)[0]


def device_from_secret(data: Mapping[str, str] | None) -> Device | None:
    """The device in a state Secret's `data` (base64 values, as the apiserver returns
    them), or None while containerboot has not written all three keys (or wrote them
    unreadably: then the sidecar will write them again)."""
    data = data or {}
    try:
        values = {
            key: base64.b64decode(data[key], validate=True).decode()
            for key in ("device_id", "device_fqdn", "device_ips")
        }
        ips = json.loads(values["device_ips"])
    except (KeyError, binascii.Error, UnicodeDecodeError, ValueError):
        return None
    fqdn = values["device_fqdn"].rstrip(".")
    if not values["device_id"] or not fqdn or not isinstance(ips, list):
        return None
    return Device(values["device_id"], fqdn, tuple(str(ip) for ip in ips))


class SidecarState(StrEnum):
    """The sidecar container, from the pod's status."""

    NO_POD = "no-pod"
    NOT_INJECTED = "not-injected"
    """An injected agent's labelled pod has no sidecar (tailscale/injected_pod.py)."""
    NOT_RUNNING = "not-running"
    NOT_READY = "not-ready"
    READY = "ready"


def sidecar_state(pod: Mapping[str, Any] | None) -> tuple[SidecarState, str]:
    """Where the agent pod's tailscale container is, and a sentence saying so."""
    if pod is None:
        return SidecarState.NO_POD, "The agent's pod does not exist (yet)."
    name = (pod.get("metadata") or {}).get("name", "")
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    own = next((s for s in statuses if s.get("name") == CONTAINER_NAME), None)
    if own is None:
        said = f"Pod {name} has no status for its {CONTAINER_NAME} container yet."
        return SidecarState.NOT_RUNNING, said
    state = own.get("state") or {}
    if "running" not in state:
        detail = state.get("waiting") or state.get("terminated") or {}
        why = detail.get("reason") or "unknown"
        if "exitCode" in detail:
            why = f"{why}, exit code {detail['exitCode']}"
        restarts = own.get("restartCount") or 0
        return (
            SidecarState.NOT_RUNNING,
            f"The {CONTAINER_NAME} sidecar of pod {name} is not running ({why}; "
            f"{restarts} restarts).",
        )
    if not own.get("ready"):
        return (
            SidecarState.NOT_READY,
            f"The {CONTAINER_NAME} sidecar of pod {name} runs but is not ready: its device "
            "has no tailnet IP yet, or lost its connection to the control server.",
        )
    return SidecarState.READY, f"The {CONTAINER_NAME} sidecar of pod {name} is running and ready."
