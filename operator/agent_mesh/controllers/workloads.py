"""Agents' children put back when deleted (a managed agent's, or the objects a tailscale
agent's injected sidecar needs): the operator watches the kinds it creates for them (only
objects labelled as its own) and re-applies the owning MeshAgent's children when one goes.
Changes to a child are undone at the MeshAgent's next reconcile (its spec changes, or the
operator restarts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import kopf

from agent_mesh.config import OperatorConfig
from agent_mesh.controllers.services import MeshServices
from agent_mesh.domain.agents import AGENT_LABEL
from agent_mesh.domain.errors import ValidationError
from agent_mesh.kube import workloads

CHILD_KINDS: Final = (  # kopf's resource selectors: "v1" alone is the core group
    ("apps/v1", "statefulsets"),
    ("v1", "services"),
    ("v1", "serviceaccounts"),
    ("v1", "secrets"),
    ("v1", "configmaps"),
    ("rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "rolebindings"),
)
MANAGED: Final[dict[str, Any]] = {  # a label value, or kopf.PRESENT
    "app.kubernetes.io/managed-by": "agent-mesh",
    AGENT_LABEL: kopf.PRESENT,
}


async def apply_children(
    runtime: MeshServices, config: OperatorConfig, meshagent: Mapping[str, Any]
) -> None:
    """Bring a managed agent's children to what its MeshAgent says, with the operator's
    defaults (network, Tailscale sidecar); raises as `workloads.reconcile` does."""
    await workloads.reconcile(
        runtime.api,
        meshagent,
        default_network=config.default_network,
        tailscale=config.sidecar_settings(),
    )


async def child_event(event: kopf.RawEvent, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    if event["type"] != "DELETED":
        return
    runtime: MeshServices = memo.runtime
    meshagent = await workloads.owning_meshagent(runtime.api, event["object"])
    if meshagent is None:
        return  # gone with its MeshAgent
    config: OperatorConfig = memo.config
    meta = event["object"].get("metadata") or {}
    try:
        await apply_children(runtime, config, meshagent)
    except (ValidationError, workloads.ChildRefused) as refused:
        logger.warning("could not put back %s: %s", meta.get("name"), refused)
        return
    logger.info(
        "%s %s/%s deleted: MeshAgent %s's children re-applied",
        event["object"].get("kind"),
        meta.get("namespace"),
        meta.get("name"),
        meshagent["metadata"]["name"],
    )


for _api_version, _plural in CHILD_KINDS:
    kopf.on.event(_api_version, _plural, labels=MANAGED)(child_event)
