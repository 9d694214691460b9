"""The tailscale sidecar injected into a pod you run yourself, labelled
`agentmesh.io/agent=<MeshAgent name>`: what the mutating webhook answers, decided from the
pod and its MeshAgent alone (pure; the webhook reads the MeshAgent).

The sidecar is the managed agents' one (tailscale/sidecar.py), for the MeshAgent the label
names. Its state Secret, auth key copy, serve ConfigMap, Role and RoleBinding are the
operator's (workloads/objects.tailnet_objects), and the RoleBinding names one subject: the
MeshAgent's spec.serviceAccountName. A pod running as any other ServiceAccount could not
write the state Secret, so it is refused with the reason rather than given a sidecar that
would crash; no ServiceAccount is changed behind the user's back and no other account
gains a right (least privilege).

Idempotent: a pod that has a container named `tailscale` already is left as it is, so a
second call (reinvocation, a re-created pod dumped from the apiserver) adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent_mesh.api.meshagent import Network
from agent_mesh.tailscale import sidecar
from agent_mesh.tailscale.sidecar import SidecarSettings


@dataclass(frozen=True)
class Injection:
    """The webhook's answer: the pod's new containers and volumes (None: unchanged), a
    warning for the user (why nothing was injected), or a refusal (why the pod is refused)."""

    containers: list[dict[str, Any]] | None = None
    volumes: list[dict[str, Any]] | None = None
    warning: str | None = None
    refusal: str | None = None


def has_sidecar(pod_spec: Mapping[str, Any]) -> bool:
    """Whether the pod already runs the sidecar (by its container name)."""
    return any(c.get("name") == sidecar.CONTAINER_NAME for c in pod_spec.get("containers") or [])


def inject(
    pod: Mapping[str, Any],
    meshagent: Mapping[str, Any] | None,
    *,
    agent_name: str,
    settings: SidecarSettings | None,
    default_network: str,
) -> Injection:
    """What to do with `pod`, labelled for the MeshAgent `agent_name` (`meshagent`, None
    when it does not exist in the pod's namespace)."""
    spec = pod.get("spec") or {}
    namespace = str((pod.get("metadata") or {}).get("namespace") or "")
    if has_sidecar(spec):
        return Injection()
    where = f"MeshAgent {namespace}/{agent_name}"
    if meshagent is None:
        return Injection(
            warning=f"{where} does not exist: the pod is admitted without the tailscale sidecar"
        )
    agent_spec = meshagent.get("spec") or {}
    network = agent_spec.get("network") or default_network
    if network != Network.TAILSCALE.value:
        return Injection(warning=f"{where} has network {network}: no tailscale sidecar is injected")
    if agent_spec.get("workload") is not None:
        return Injection(
            warning=f"{where} has spec.workload: the operator runs its pod (with the sidecar); "
            "a pod of your own gets none"
        )
    if settings is None:
        return Injection(
            warning="the operator has no Tailscale settings (AGENT_MESH_TAILSCALE_TAILNET_DOMAIN "
            "unset): no tailscale sidecar is injected"
        )
    account = agent_spec.get("serviceAccountName")
    runs_as = spec.get("serviceAccountName") or "default"
    state = sidecar.state_secret_name(agent_name)
    if not account:
        return Injection(
            refusal=f"{where} has no spec.serviceAccountName: the tailscale sidecar may write "
            f"its state Secret {state} only as that ServiceAccount; set it and run the pod as it"
        )
    if runs_as != account:
        return Injection(
            refusal=f"spec.serviceAccountName: the pod runs as {runs_as!r}, but only {account!r} "
            f"({where}'s spec.serviceAccountName) may write the tailscale sidecar's state "
            f"Secret {state}; run the pod as {account!r}"
        )
    taken = {v.get("name") for v in spec.get("volumes") or []}
    for volume in sidecar.volumes(agent_name):
        if volume["name"] in taken:
            return Injection(
                refusal=f"spec.volumes: a volume is named {volume['name']}, a name the tailscale "
                "sidecar uses; rename it"
            )
    agent_id = str(agent_spec.get("agentId") or agent_name)
    return Injection(
        containers=[
            *(spec.get("containers") or []),
            sidecar.container(settings, namespace, agent_id, agent_name),
        ],
        volumes=[*(spec.get("volumes") or []), *sidecar.volumes(agent_name)],
    )
