"""MeshTask objects created and read for the mesh API (durable fast-path tasks).

A durable submission becomes an ordinary MeshTask: the watch hands it to the coordinator
like one made with kubectl, so it survives restarts and shows in `kubectl get mt`. Names
come from `generateName`, so submitters need not invent unique ones; the label says who
submitted it, for `kubectl get mt -l agentmesh.io/submitted-by=<agentId>`.
"""

from __future__ import annotations

import json
from typing import Any, Final

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.api import API_VERSION, GROUP, VERSION
from agent_mesh.domain.errors import ForbiddenError, MeshError, ValidationError
from agent_mesh.kube.errors import unavailable

PLURAL: Final = "meshtasks"
GENERATE_NAME: Final = "task-"
SUBMITTED_BY_LABEL: Final = "agentmesh.io/submitted-by"


class MeshTaskApi:
    """Creates and reads MeshTasks through the async Kubernetes client."""

    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)

    async def create(self, namespace: str, spec: dict[str, Any], submitter: str) -> dict[str, Any]:
        """The created MeshTask (with its name and uid). The apiserver's refusal of the spec
        (schema, CEL, admission webhook) is a ValidationError carrying its message."""
        body = {
            "apiVersion": API_VERSION,
            "kind": "MeshTask",
            "metadata": {
                "generateName": GENERATE_NAME,
                "namespace": namespace,
                "labels": {SUBMITTED_BY_LABEL: submitter},
            },
            "spec": spec,
        }
        try:
            created = await self._custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body
            )
        except ApiException as error:
            raise _refusal(f"creating a MeshTask in namespace {namespace}", error) from None
        return dict(created)

    async def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The MeshTask, or None when it does not exist (any more)."""
        try:
            body = await self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise unavailable(f"reading MeshTask {namespace}/{name}", error) from None
        return dict(body)


def _refusal(doing: str, error: ApiException) -> MeshError:
    """422/400: the spec broke a rule the apiserver checks; 403: the operator's RBAC does
    not reach the namespace; anything else: the apiserver is unavailable."""
    if error.status in (400, 422):
        return ValidationError(f"{doing} was refused: {_message(error)}", field="spec")
    if error.status == 403:
        return ForbiddenError(f"{doing} is not allowed to the operator: {_message(error)}")
    return unavailable(doing, error)


def _message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or b"").get("message") or error.reason)
    except (TypeError, ValueError, AttributeError):
        return str(error.reason)
