"""A managed agent's children on the apiserver: applied (server-side apply, field manager
agent-mesh, forced), so one call creates a missing child, puts back a deleted one and
undoes a change made to a field the operator owns; an unchanged child is not written.

The sidecar's state Secret is only ever created: once it exists it is the sidecar's (its
device identity), and the operator never writes into it. The auth key is read from its
source Secret in the operator's namespace and applied as the agent's own copy, so a pod
never references another namespace and a rotated key reaches every agent.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import GROUP, VERSION
from agent_mesh.kube.errors import unavailable
from agent_mesh.tailscale import sidecar
from agent_mesh.tailscale.sidecar import SidecarSettings
from agent_mesh.workloads.objects import (
    AgentObjects,
    TailnetObjects,
    build,
    injected_tailnet_objects,
    selector,
)

FIELD_MANAGER: Final = "agent-mesh"
_APPLY: Final = "application/apply-patch+yaml"

Patch = Callable[..., Awaitable[Any]]
Delete = Callable[..., Awaitable[Any]]


class ChildRefused(Exception):
    """The apiserver refused a child as invalid or forbidden (4xx): retrying the same spec
    will not help. The message names the child and the apiserver's reason."""


class AuthKeyMissing(ChildRefused):
    """The auth key's source Secret (or its key) does not exist: nothing is applied, so no
    pod is left failing on a Secret it cannot read."""


def _patchers(api: client.ApiClient) -> Mapping[str, Patch]:
    core, apps, rbac = (
        client.CoreV1Api(api),
        client.AppsV1Api(api),
        client.RbacAuthorizationV1Api(api),
    )
    return {
        "ServiceAccount": core.patch_namespaced_service_account,
        "Secret": core.patch_namespaced_secret,
        "ConfigMap": core.patch_namespaced_config_map,
        "Service": core.patch_namespaced_service,
        "Role": rbac.patch_namespaced_role,
        "RoleBinding": rbac.patch_namespaced_role_binding,
        "StatefulSet": apps.patch_namespaced_stateful_set,
    }


async def apply_children(api: client.ApiClient, objects: AgentObjects | TailnetObjects) -> None:
    """Create or update every child; ChildRefused when the apiserver refuses one as
    invalid, UnavailableError when it fails."""
    patchers = _patchers(api)
    for child in objects.all():
        meta = child["metadata"]
        what = f"{child['kind']} {meta['namespace']}/{meta['name']}"
        try:
            if child is objects.state_secret:
                await _create_once(api, child)
            else:
                await patchers[child["kind"]](
                    meta["name"],
                    meta["namespace"],
                    child,
                    field_manager=FIELD_MANAGER,
                    force=True,
                    _content_type=_APPLY,
                )
        except ApiException as error:
            if error.status is not None and 400 <= error.status < 500 and error.status != 429:
                raise ChildRefused(f"{what}: {_reason(error)}") from None
            raise unavailable(f"applying {what}", error) from error


async def _create_once(api: client.ApiClient, secret: Any) -> None:
    try:
        await client.CoreV1Api(api).create_namespaced_secret(
            secret["metadata"]["namespace"], secret, field_manager=FIELD_MANAGER
        )
    except ApiException as error:
        if error.status != 409:  # there already: the sidecar's now
            raise


async def reconcile(
    api: client.ApiClient,
    meshagent: Mapping[str, Any],
    *,
    default_network: str,
    tailscale: SidecarSettings | None,
) -> AgentObjects | TailnetObjects | None:
    """Bring an agent's children to what its MeshAgent says: a managed agent's (with
    spec.workload) all of them; a tailscale agent's without a workload, the objects the
    sidecar injected into its labelled pods needs (None when it needs none). Raises
    ValidationError (from the builders, naming the field), ChildRefused, or
    UnavailableError."""
    objects: AgentObjects | TailnetObjects | None
    if (meshagent.get("spec") or {}).get("workload") is not None:
        objects = build(meshagent, default_network=default_network, tailscale=tailscale)
        if objects.role is not None and tailscale is not None:
            key = await read_auth_key(api, tailscale)
            objects = build(
                meshagent, default_network=default_network, tailscale=tailscale, auth_key=key
            )
        on_tailnet = objects.role is not None
    else:
        objects = injected_tailnet_objects(
            meshagent, default_network=default_network, tailscale=tailscale
        )
        if objects is not None and tailscale is not None:
            key = await read_auth_key(api, tailscale)
            objects = injected_tailnet_objects(
                meshagent, default_network=default_network, tailscale=tailscale, auth_key=key
            )
        on_tailnet = objects is not None
    if objects is not None:
        await apply_children(api, objects)
    if not on_tailnet:
        meta = meshagent["metadata"]
        await remove_tailnet_children(api, meta["namespace"], meta["name"])
    return objects


async def read_auth_key(api: client.ApiClient, settings: SidecarSettings) -> str:
    """The auth key, base64 as in its source Secret's data; AuthKeyMissing saying what to
    create when there is none."""
    where = f"Secret {settings.auth_namespace}/{settings.auth_secret}"
    try:
        found = await client.CoreV1Api(api).read_namespaced_secret(
            settings.auth_secret, settings.auth_namespace
        )
    except ApiException as error:
        if error.status != 404:
            raise unavailable(f"reading {where}", error) from error
        found = None
    key = ((found.data if found is not None else None) or {}).get(sidecar.AUTH_KEY_FIELD)
    if not key:
        raise AuthKeyMissing(
            f"the tailnet auth key {where}, key {sidecar.AUTH_KEY_FIELD}, does not exist: "
            "create it (AGENT_MESH_TAILSCALE_AUTH_SECRET names it); the operator copies it "
            "into the agent's namespace"
        )
    return str(key)


async def auth_key_stale(
    api: client.ApiClient, namespace: str, agent_name: str, settings: SidecarSettings
) -> bool:
    """Whether the agent's copy of the auth key differs from the source (or either is
    missing): then the children need applying again."""
    try:
        key = await read_auth_key(api, settings)
        copy = await client.CoreV1Api(api).read_namespaced_secret(
            sidecar.auth_secret_name(agent_name), namespace
        )
    except AuthKeyMissing:
        return True
    except ApiException as error:
        if error.status == 404:
            return True
        raise unavailable(f"reading {sidecar.auth_secret_name(agent_name)}", error) from error
    return bool((copy.data or {}).get(sidecar.AUTH_KEY_FIELD) != key)


async def remove_tailnet_children(api: client.ApiClient, namespace: str, agent_name: str) -> None:
    """An agent no longer on the tailnet: its sidecar's Role, RoleBinding and serve
    ConfigMap and its copy of the auth key go, if they are the operator's for this agent
    (by label). The state Secret stays: its device may come back."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    labels = ",".join(f"{k}={v}" for k, v in selector(agent_name).items())
    deletes: list[tuple[Delete, str]] = [
        (rbac.delete_collection_namespaced_role_binding, sidecar.state_secret_name(agent_name)),
        (rbac.delete_collection_namespaced_role, sidecar.state_secret_name(agent_name)),
        (core.delete_collection_namespaced_config_map, sidecar.serve_config_name(agent_name)),
        (core.delete_collection_namespaced_secret, sidecar.auth_secret_name(agent_name)),
    ]
    for delete, name in deletes:
        try:
            await delete(namespace, label_selector=labels, field_selector=f"metadata.name={name}")
        except ApiException as error:
            raise unavailable(f"deleting {name} in {namespace}", error) from error


async def owning_meshagent(
    api: client.ApiClient, child: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The MeshAgent that controls `child` (by ownerReference, uid checked), if it still
    exists and is not being deleted; None otherwise."""
    meta = child.get("metadata") or {}
    owner = next(
        (
            ref
            for ref in meta.get("ownerReferences") or []
            if ref.get("kind") == "MeshAgent" and ref.get("controller")
        ),
        None,
    )
    if owner is None:
        return None
    try:
        found: dict[str, Any] = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, meta.get("namespace", ""), "meshagents", owner["name"]
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise unavailable(f"reading MeshAgent {owner['name']}", error) from error
    found_meta = found.get("metadata") or {}
    if found_meta.get("uid") != owner.get("uid") or found_meta.get("deletionTimestamp"):
        return None
    return found


def _reason(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or b"").get("message") or error.reason)
    except (TypeError, ValueError):
        return f"{error.status} {error.reason}"
