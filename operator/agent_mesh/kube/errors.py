"""Turn apiserver failures into mesh errors a caller can act on."""

from __future__ import annotations

from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.domain.errors import UnavailableError


def unavailable(doing: str, error: ApiException) -> UnavailableError:
    """The apiserver refused or failed: a 503 that says what the operator was doing."""
    return UnavailableError(
        f"{doing} failed: {error.status} {error.reason}", code="KubernetesUnavailable"
    )


def operator_namespace_missing(namespace: str) -> UnavailableError:
    """Creating the operator's own Secret found no namespace to put it in."""
    return UnavailableError(
        f"namespace {namespace} does not exist: create it, or point "
        "--operator-namespace (AGENT_MESH_OPERATOR_NAMESPACE) at one that does",
        field="operatorNamespace",
        code="OperatorNamespaceMissing",
    )
