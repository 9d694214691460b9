"""The pod of an injected agent (a MeshAgent without `spec.workload` whose pods get the
sidecar from the webhook), found by its label `agentmesh.io/agent=<name>` rather than by
a StatefulSet's name, and its sidecar's state.

One pod per MeshAgent is expected (the state Secret and the host name are the agent's).
With several, the newest live one is judged (a Deployment's rolling update has two for a
moment; judging none would take the agent off the tailnet at every rollout) and the
message names them all: two sidecars would fight over one device. Pods being deleted or
finished count only when no other pod is left.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agent_mesh.domain.agents import AGENT_LABEL
from agent_mesh.tailscale.device import SidecarState, sidecar_state
from agent_mesh.tailscale.sidecar import CONTAINER_NAME

_FINISHED = frozenset({"Succeeded", "Failed"})


def _live(pod: Mapping[str, Any]) -> bool:
    meta = pod.get("metadata") or {}
    phase = (pod.get("status") or {}).get("phase")
    return not meta.get("deletionTimestamp") and phase not in _FINISHED


def _age_key(pod: Mapping[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


def judged_pod(pods: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The labelled pod whose sidecar speaks for the agent: the newest live one, else the
    newest of those being deleted or finished, else None."""
    every = list(pods)
    live = [pod for pod in every if _live(pod)]
    return max(live or every, key=_age_key, default=None)


def injected_sidecar_state(
    pods: Iterable[Mapping[str, Any]],
    *,
    agent_name: str,
    namespace: str,
    service_account: str | None,
) -> tuple[SidecarState, str]:
    """Where the injected sidecar is, judged from the pods labelled for the agent, and a
    sentence saying so (and naming the other pods when there are several)."""
    every = list(pods)
    label = f"{AGENT_LABEL}={agent_name}"
    account = (
        f"ServiceAccount {service_account!r}" if service_account else "spec.serviceAccountName"
    )
    pod = judged_pod(every)
    if pod is None:
        return (
            SidecarState.NO_POD,
            f"No pod labelled {label} exists in namespace {namespace} (yet): the sidecar is "
            f"injected into your pod with that label that runs as {account}.",
        )
    name = str((pod.get("metadata") or {}).get("name") or "")
    live = sorted(str((p.get("metadata") or {}).get("name") or "") for p in every if _live(p))
    several = (
        f" {len(live)} pods are labelled {label} ({', '.join(live)}); one device per "
        f"MeshAgent, so their sidecars fight over it: pod {name}, the newest, is judged."
        if len(live) > 1
        else ""
    )
    spec = pod.get("spec") or {}
    if not any(c.get("name") == CONTAINER_NAME for c in spec.get("containers") or []):
        runs_as = spec.get("serviceAccountName") or "default"
        why = (
            f"it runs as {runs_as!r}, not as {account}, so the webhook would refuse it now"
            if service_account and runs_as != service_account
            else "it was created before the webhook could inject it (before the MeshAgent, "
            "while the MeshAgent was not on tailscale, or with injection disabled or its "
            "failurePolicy Ignore while the operator was down)"
        )
        return (
            SidecarState.NOT_INJECTED,
            f"Pod {name} is labelled {label} but has no {CONTAINER_NAME} container: {why}. "
            f"Re-create it running as {account}.{several}",
        )
    state, said = sidecar_state(pod)
    return state, said + several
