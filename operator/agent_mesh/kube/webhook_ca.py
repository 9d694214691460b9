"""The operator's webhook configurations on the apiserver, Validating and Mutating, both
named `webhook_configuration`.

webhook_registration=ca-bundle: someone else owns them (the Helm chart, kustomize); the
operator fills in only the CA its webhook certificate chains to, at start and after each
CA change, and leaves the rules, names and Service reference alone. A configuration is
read, changed in memory and replaced with its resourceVersion, so a concurrent edit (a
`helm upgrade`) is never overwritten: the write is retried on the newer version instead.
Nothing is written when every webhook already holds the bundle.

webhook_registration=self: the operator writes both configurations whole (created, or
replaced the same way), at the URL its webhook server listens at.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agent_mesh.domain.errors import ValidationError
from agent_mesh.kube.errors import unavailable

logger = logging.getLogger("agent_mesh.tls")

_CONFLICT_RETRIES = 5
Kind = Literal["validating", "mutating"]
KIND_NAMES: Final[dict[Kind, str]] = {
    "validating": "ValidatingWebhookConfiguration",
    "mutating": "MutatingWebhookConfiguration",
}


def with_ca_bundle(webhooks: list[dict[str, Any]], bundle: bytes) -> list[dict[str, Any]] | None:
    """`webhooks` with every clientConfig.caBundle set to `bundle`, or None when all of
    them hold it already (no write needed)."""
    encoded = base64.b64encode(bundle).decode()
    if all(w.get("clientConfig", {}).get("caBundle") == encoded for w in webhooks):
        return None
    return [
        {**w, "clientConfig": {**w.get("clientConfig", {}), "caBundle": encoded}} for w in webhooks
    ]


@dataclass(frozen=True)
class _Calls:
    read: Callable[..., Awaitable[Any]]
    replace: Callable[..., Awaitable[Any]]
    create: Callable[..., Awaitable[Any]]
    delete: Callable[..., Awaitable[Any]]


def _calls(api: client.ApiClient, kind: Kind) -> _Calls:
    admission = client.AdmissionregistrationV1Api(api)
    if kind == "validating":
        return _Calls(
            admission.read_validating_webhook_configuration,
            admission.replace_validating_webhook_configuration,
            admission.create_validating_webhook_configuration,
            admission.delete_validating_webhook_configuration,
        )
    return _Calls(
        admission.read_mutating_webhook_configuration,
        admission.replace_mutating_webhook_configuration,
        admission.create_mutating_webhook_configuration,
        admission.delete_mutating_webhook_configuration,
    )


class WebhookCaInjector:
    """Puts the operator's CA bundle into the named webhook configuration of `kind`. A
    missing validating configuration is an error; a missing mutating one means the
    installation left injection out: a warning, and nothing to fill."""

    def __init__(self, api: client.ApiClient, name: str, kind: Kind = "validating") -> None:
        self._api = api
        self._calls = _calls(api, kind)
        self.kind = KIND_NAMES[kind]
        self.required = kind == "validating"
        self.name = name
        self.writes = 0
        """Replacements made so far (reads and no-op visits are not counted)."""

    async def inject(self, bundle: bytes) -> None:
        """Write `bundle` into every webhook of the configuration; a missing required
        configuration is an error naming it (the chart or kustomize creates it, not the
        operator)."""
        for _ in range(_CONFLICT_RETRIES):
            try:
                current = await self._calls.read(self.name)
            except ApiException as error:
                if error.status == 404 and not self.required:
                    logger.warning(
                        "%s %s does not exist: no tailscale sidecar is injected into labelled "
                        "pods (the Helm chart and config/default create it)",
                        self.kind,
                        self.name,
                    )
                    return
                if error.status == 404:
                    raise ValidationError(
                        f"{self.kind} {self.name!r} does not exist: with "
                        "webhook_registration=ca-bundle the installation (Helm chart, "
                        "config/default) creates it and the operator fills in its caBundle",
                        field="webhook_configuration",
                    ) from None
                raise unavailable(f"reading {self.kind} {self.name}", error) from None
            body: dict[str, Any] = self._api.sanitize_for_serialization(current)
            webhooks = with_ca_bundle(body.get("webhooks") or [], bundle)
            if webhooks is None:
                return
            body["webhooks"] = webhooks
            try:
                await self._calls.replace(self.name, body)
            except ApiException as error:
                if error.status == 409:
                    continue  # edited meanwhile: read the newer version and try again
                raise unavailable(f"replacing {self.kind} {self.name}", error) from None
            self.writes += 1
            logger.info("caBundle injected into %s %s", self.kind, self.name)
            return
        raise unavailable(
            f"replacing {self.kind} {self.name}",
            ApiException(status=409, reason=f"Conflict {_CONFLICT_RETRIES} times in a row"),
        )


async def register(
    api: client.ApiClient, kind: Kind, name: str, webhooks: list[dict[str, Any]]
) -> None:
    """webhook_registration=self: the configuration `name` of `kind` holds exactly
    `webhooks` (created, or replaced; nothing is written when it holds them already)."""
    calls, what = _calls(api, kind), f"{KIND_NAMES[kind]} {name}"
    wanted = {"apiVersion": "admissionregistration.k8s.io/v1", "metadata": {"name": name}}
    for _ in range(_CONFLICT_RETRIES):
        try:
            current = await calls.read(name)
        except ApiException as error:
            if error.status != 404:
                raise unavailable(f"reading {what}", error) from None
            current = None
        try:
            if current is None:
                await calls.create({**wanted, "webhooks": webhooks})
            else:
                body: dict[str, Any] = api.sanitize_for_serialization(current)
                if _same(body.get("webhooks") or [], webhooks):
                    return
                body["webhooks"] = webhooks
                await calls.replace(name, body)
        except ApiException as error:
            if error.status == 409:
                continue  # created or edited meanwhile: read it again
            raise unavailable(f"writing {what}", error) from None
        logger.info("%s registered", what)
        return
    raise unavailable(
        f"writing {what}",
        ApiException(status=409, reason=f"Conflict {_CONFLICT_RETRIES} times in a row"),
    )


def _same(current: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> bool:
    """Whether the apiserver's webhooks (with its defaults filled in) hold every field we
    set, as we set it."""
    if len(current) != len(wanted):
        return False
    return all(
        all(have.get(key) == value for key, value in want.items())
        for have, want in zip(current, wanted, strict=True)
    )


async def unregister(api: client.ApiClient, kind: Kind, name: str) -> None:
    """Delete the configuration `name` of `kind`, if it is there."""
    try:
        await _calls(api, kind).delete(name)
    except ApiException as error:
        if error.status != 404:
            raise unavailable(f"deleting {KIND_NAMES[kind]} {name}", error) from None
