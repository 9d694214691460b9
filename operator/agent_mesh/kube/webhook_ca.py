"""The caBundle of a ValidatingWebhookConfiguration someone else owns (the Helm chart,
kustomize): the operator fills in only the CA its webhook certificate chains to, at start
and after each CA change, and leaves the rules, names and Service reference alone.

The configuration is read, changed in memory and replaced with its resourceVersion, so a
concurrent edit (a `helm upgrade`) is never overwritten: the write is retried on the
newer version instead. Nothing is written when every webhook already holds the bundle.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.domain.errors import ValidationError
from agent_mesh.kube.errors import unavailable

logger = logging.getLogger("agent_mesh.tls")

_CONFLICT_RETRIES = 5


def with_ca_bundle(webhooks: list[dict[str, Any]], bundle: bytes) -> list[dict[str, Any]] | None:
    """`webhooks` with every clientConfig.caBundle set to `bundle`, or None when all of
    them hold it already (no write needed)."""
    encoded = base64.b64encode(bundle).decode()
    if all(w.get("clientConfig", {}).get("caBundle") == encoded for w in webhooks):
        return None
    return [
        {**w, "clientConfig": {**w.get("clientConfig", {}), "caBundle": encoded}} for w in webhooks
    ]


class WebhookCaInjector:
    """Puts the operator's CA bundle into the named ValidatingWebhookConfiguration."""

    def __init__(self, api: client.ApiClient, name: str) -> None:
        self._api = api
        self._admission = client.AdmissionregistrationV1Api(api)
        self.name = name
        self.writes = 0
        """Replacements made so far (reads and no-op visits are not counted)."""

    async def inject(self, bundle: bytes) -> None:
        """Write `bundle` into every webhook of the configuration; a missing configuration
        is an error naming it (the chart or kustomize creates it, not the operator)."""
        for _ in range(_CONFLICT_RETRIES):
            try:
                current = await self._admission.read_validating_webhook_configuration(self.name)
            except ApiException as error:
                if error.status == 404:
                    raise ValidationError(
                        f"ValidatingWebhookConfiguration {self.name!r} does not exist: with "
                        "webhook_registration=ca-bundle the installation (Helm chart, "
                        "config/default) creates it and the operator fills in its caBundle",
                        field="webhook_configuration",
                    ) from None
                raise unavailable(
                    f"reading ValidatingWebhookConfiguration {self.name}", error
                ) from None
            body: dict[str, Any] = self._api.sanitize_for_serialization(current)
            webhooks = with_ca_bundle(body.get("webhooks") or [], bundle)
            if webhooks is None:
                return
            body["webhooks"] = webhooks
            try:
                await self._admission.replace_validating_webhook_configuration(
                    self.name,
                    body,  # type: ignore[arg-type]  # a dict body is sent as is
                )
            except ApiException as error:
                if error.status == 409:
                    continue  # edited meanwhile: read the newer version and try again
                raise unavailable(
                    f"replacing ValidatingWebhookConfiguration {self.name}", error
                ) from None
            self.writes += 1
            logger.info("caBundle injected into ValidatingWebhookConfiguration %s", self.name)
            return
        raise unavailable(
            f"replacing ValidatingWebhookConfiguration {self.name}",
            ApiException(status=409, reason=f"Conflict {_CONFLICT_RETRIES} times in a row"),
        )
