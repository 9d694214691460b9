"""ServiceAccount token checks by the apiserver itself (TokenReview), and the pod lookup
that maps a pod-bound token to its MeshAgent."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.auth.authority import ReviewedToken
from agent_mesh.domain.agents import AGENT_LABEL
from agent_mesh.domain.errors import AuthError
from agent_mesh.kube.errors import unavailable


class ApiTokenReviewer:
    """TokenReview against the apiserver the operator talks to."""

    def __init__(self, api: client.ApiClient) -> None:
        self._authn = client.AuthenticationV1Api(api)
        self._core = client.CoreV1Api(api)

    async def review(self, token: str, audience: str) -> ReviewedToken:
        body: Any = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        }
        try:
            review = await self._authn.create_token_review(body)
        except ApiException as error:
            raise unavailable("TokenReview", error) from error
        status = review.status
        if not status or not status.authenticated:
            reason = (status.error if status else None) or "not authenticated"
            raise AuthError(
                f"serviceAccountToken was refused by the apiserver's TokenReview: {reason}",
                field="serviceAccountToken",
                code="TokenReviewFailed",
            )
        if audience not in (status.audiences or []):
            raise AuthError(
                f"serviceAccountToken is not for audience {audience!r}: request a projected "
                f"token with `audience: {audience}`",
                field="serviceAccountToken",
                code="AudienceInvalid",
            )
        user = status.user
        return ReviewedToken(username=user.username or "", extra=dict(user.extra or {}))

    async def pod_agent_label(self, namespace: str, pod: str) -> str | None:
        found = await self._pod(namespace, pod)
        if found is None:
            return None
        value = (found.metadata.labels or {}).get(AGENT_LABEL)
        return str(value) if value else None

    async def pod_ip(self, namespace: str, pod: str) -> str | None:
        found = await self._pod(namespace, pod)
        status = found.status if found is not None else None
        return str(status.pod_ip) if status is not None and status.pod_ip else None

    async def _pod(self, namespace: str, pod: str) -> Any:
        """The pod, or None when it does not exist; other failures are UnavailableError."""
        try:
            return await self._core.read_namespaced_pod(pod, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise unavailable(f"reading pod {namespace}/{pod}", error) from error
