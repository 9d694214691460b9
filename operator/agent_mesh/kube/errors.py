"""Turn apiserver failures into mesh errors a caller can act on."""

from __future__ import annotations

from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.domain.errors import UnavailableError


def unavailable(doing: str, error: ApiException) -> UnavailableError:
    """The apiserver refused or failed: a 503 that says what the operator was doing."""
    return UnavailableError(
        f"{doing} failed: {error.status} {error.reason}", code="KubernetesUnavailable"
    )
