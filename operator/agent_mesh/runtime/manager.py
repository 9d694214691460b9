"""Run the operator: kopf with agent-mesh's settings, handlers and admission webhook."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import kopf

from agent_mesh.config import OperatorConfig
from agent_mesh.controllers import (  # noqa: F401  (importing registers the handlers)
    aclpolicies,
    admission,
    meshagents,
    meshtasks,
    tailnet,
    workloads,
)
from agent_mesh.controllers.services import MeshServices
from agent_mesh.domain.errors import MeshError
from agent_mesh.kube import webhook_ca
from agent_mesh.kube.client import api_client
from agent_mesh.kube.webhook_ca import WebhookCaInjector
from agent_mesh.pki.certs import write_private
from agent_mesh.runtime.namespace_observation import observe_listed_namespaces
from agent_mesh.runtime.services import MeshRuntime

logger = logging.getLogger("agent_mesh.operator")
ANNOTATION_PREFIX = "agentmesh.io"


class RegisteringWebhookServer(kopf.WebhookServer):
    """kopf's webhook server, plus a call after each (re)start with the client
    configuration it listens at (URL and CA bundle): with webhook_registration=self the
    operator registers its configurations there, instead of kopf, whose own registration
    cannot set a namespaceSelector, a timeout or a reinvocationPolicy."""

    def __init__(
        self,
        *,
        on_listening: Callable[[Mapping[str, Any]], Awaitable[None]] | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.on_listening = on_listening

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in super().__call__(fn):
            if self.on_listening is not None:
                await self.on_listening(client_config)
            yield client_config


def webhook_server(
    config: OperatorConfig, runtime: MeshRuntime, cert_dir: Path
) -> kopf.WebhookServer:
    """The TLS webhook server with the certificate the runtime's owner keeps renewed (the
    mesh API's). kopf watches these files and restarts the server when they change; with
    webhook_registration=self the operator then registers both webhook configurations
    again, with the new CA bundle as their caBundle."""
    serving, bundle = cert_dir / "tls.pem", cert_dir / "ca.crt"

    def write_files() -> None:
        pair, ca = runtime.tls.serving.pair, runtime.tls.bundle
        assert pair is not None and ca is not None, "the certificate owner has not started"
        # certificate and key in one file, replaced at once: kopf never reads a mixed pair
        replace_private(serving, pair.cert_pem + pair.key_pem)
        replace_private(bundle, ca)

    async def on_change() -> None:
        write_files()

    write_files()
    runtime.tls.listeners.append(on_change)

    async def register_here(client_config: Mapping[str, Any]) -> None:
        validating, mutating = admission.webhooks(config, client_config)
        name = config.webhook_configuration
        await webhook_ca.register(runtime.api, "validating", name, validating)
        if config.sidecar_settings() is None:
            # nothing could be injected: labelled pods need not wait on this operator
            await webhook_ca.unregister(runtime.api, "mutating", name)
        else:
            await webhook_ca.register(runtime.api, "mutating", name, mutating)

    return RegisteringWebhookServer(
        on_listening=register_here if config.webhook_registration == "self" else None,
        addr=config.webhook_host,
        port=config.webhook_port,
        host=config.webhook_host,
        certfile=str(serving),
        pkeyfile=str(serving),
        cafile=str(bundle),
    )


def replace_private(path: Path, data: bytes) -> None:
    """Write `path` owner-readable, in one step (a rename) for readers polling it."""
    staged = path.with_name(f".{path.name}.new")
    write_private(staged, data)
    staged.replace(path)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def run(config: OperatorConfig) -> None:
    """Run until SIGINT/SIGTERM."""
    if config.webhooks:
        admission.register()
    with tempfile.TemporaryDirectory(prefix="agent-mesh-webhook-") as cert_dir:
        asyncio.run(_operate(config, Path(cert_dir)))


async def _operate(config: OperatorConfig, cert_dir: Path) -> None:
    logger.info(
        "starting agent-mesh operator",
        extra={
            "event": "operator.start",
            "namespace": ",".join(config.namespaces) or "*",
        },
    )
    if config.namespaces:
        observe_listed_namespaces()
    await kopf.operator(
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=True,  # peering (hot standby) comes with the HA work
        liveness_endpoint=f"http://{config.liveness_host}:{config.liveness_port}/healthz",
        memo=kopf.Memo(config=config, cert_dir=cert_dir),
    )


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf logs in with the client library the operator's own calls use
    (kubernetes_asyncio: in-cluster, else kubeconfig, exec plugins included), whatever
    else is installed: without this, kopf would prefer the synchronous `kubernetes`
    client when present (the tests install it), so tests and production would log in
    differently. kopf >= 1.42.5 reads the token of kubernetes_asyncio >= 33.3."""
    info: kopf.ConnectionInfo | None = await kopf.login_via_async_client(**kwargs)
    return info


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's own bookkeeping goes to agentmesh.io/* annotations, never into spec or status.
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Events are posted deliberately by handlers; kopf's per-handler chatter stays in logs.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 8


@kopf.on.startup()
async def start_mesh(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keys, revocations, certificates and the mesh API, before any resource handler runs.
    kopf starts the webhook server only after the startup handlers, so it is set here,
    once the certificate exists."""
    runtime = await MeshRuntime.create(memo.config)
    try:
        await runtime.start()
        if memo.config.webhooks and memo.config.webhook_registration == "ca-bundle":
            await inject_webhook_ca(memo.config, runtime)
    except MeshError as error:
        await runtime.stop()
        raise kopf.PermanentError(error.message) from error
    services: MeshServices = runtime  # what the handlers see of it
    memo.runtime = services
    if memo.config.webhooks:
        settings.admission.server = webhook_server(memo.config, runtime, memo.cert_dir)


async def inject_webhook_ca(config: OperatorConfig, runtime: MeshRuntime) -> None:
    """The installation owns the webhook configuration, the operator its CA: the bundle
    goes in now and again whenever the CA changes."""
    injectors = [
        WebhookCaInjector(runtime.api, config.webhook_configuration, kind)
        for kind in ("validating", "mutating")
    ]

    async def inject() -> None:
        if runtime.tls.bundle is not None:
            for injector in injectors:
                await injector.inject(runtime.tls.bundle)

    await inject()
    runtime.tls.listeners.append(inject)


@kopf.on.cleanup()
async def stop_mesh(memo: kopf.Memo, **_: Any) -> None:
    runtime: MeshRuntime | None = memo.get("runtime")
    if runtime is not None:
        await runtime.stop()


@kopf.on.cleanup()
async def remove_local_webhook(memo: kopf.Memo, **_: Any) -> None:
    """A webhook on a loopback URL dies with this process: unregister both configurations
    so a stopped operator does not block every MeshTask write or labelled pod's creation
    (failurePolicy is Fail)."""
    config: OperatorConfig = memo.config
    if not (
        config.webhooks
        and config.webhook_registration == "self"
        and _is_ip(config.webhook_host)
        and ipaddress.ip_address(config.webhook_host).is_loopback
    ):
        return
    async with api_client() as api:
        for kind in ("validating", "mutating"):
            with contextlib.suppress(MeshError):
                await webhook_ca.unregister(api, kind, config.webhook_configuration)
