"""The operator's long-lived services, built once at start-up and shared by handlers:
the agent registry, the ACL index, the authority, the certificate owner and the mesh API
server, wired together here (handlers see them through controllers.services)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from kubernetes_asyncio import client, config

from agent_mesh.auth.audit import AuditLog, Record
from agent_mesh.auth.authority import Authority, AuthSettings
from agent_mesh.config import OperatorConfig
from agent_mesh.coordinator import Coordinator
from agent_mesh.domain.acl import PolicyIndex
from agent_mesh.domain.agents import AgentRegistry
from agent_mesh.domain.clock import Clock, SystemClock
from agent_mesh.domain.errors import ValidationError
from agent_mesh.domain.health import HealthPolicy, HealthTracker
from agent_mesh.domain.ratelimit import Rate
from agent_mesh.domain.routing import Router
from agent_mesh.health.broadcast import HealthBroadcaster
from agent_mesh.health.monitor import HealthMonitor
from agent_mesh.kube.agent_status import AgentStatusWriter
from agent_mesh.kube.agents import AgentFetcher
from agent_mesh.kube.ca_bundle import CaBundlePublisher
from agent_mesh.kube.ca_secret import CertManagerSecret, SecretCaStore
from agent_mesh.kube.cluster_network import apiserver_addresses, service_cidrs
from agent_mesh.kube.events import EventPoster, ObjectRef
from agent_mesh.kube.keystore import SecretKeyStore
from agent_mesh.kube.revocationstore import ConfigMapRevocationStore
from agent_mesh.kube.tailnet_devices import DeviceCache
from agent_mesh.kube.task_status import TaskStatusWriter
from agent_mesh.kube.tasks import MeshTaskApi
from agent_mesh.kube.tokenreview import ApiTokenReviewer
from agent_mesh.mesh.callbacks import CallbackNotifier
from agent_mesh.mesh.fastpath import FastPath
from agent_mesh.mesh.limits import AbuseGuard, AbuseLimits
from agent_mesh.mesh.server import MeshServer, create_app
from agent_mesh.pki.authority import CertificateError, serving_names
from agent_mesh.pki.owner import CertificateOwner
from agent_mesh.runtime.plugins import load_strategies
from agent_mesh.transport.batching import BatchingTransport
from agent_mesh.transport.client import Transport, TransportConfig
from agent_mesh.transport.egress import EgressGuard

logger = logging.getLogger("agent_mesh.operator")


def auth_settings(cfg: OperatorConfig) -> AuthSettings:
    lifetime = dt.timedelta(seconds=cfg.token_lifetime_seconds)
    leeway = dt.timedelta(seconds=cfg.token_leeway_seconds)
    overlap = (
        dt.timedelta(seconds=cfg.key_overlap_seconds)
        if cfg.key_overlap_seconds is not None
        else lifetime + leeway
    )
    return AuthSettings(
        issuer=cfg.token_issuer,
        audience=cfg.token_audience,
        token_lifetime=lifetime,
        leeway=leeway,
        key_algorithm=cfg.key_algorithm,
        rotation_interval=dt.timedelta(seconds=cfg.key_rotation_seconds),
        key_overlap=overlap,
        service_account_audience=cfg.service_account_audience,
        recipient_token_lifetime=dt.timedelta(seconds=cfg.recipient_token_seconds),
        dispatch_token_margin=dt.timedelta(seconds=cfg.dispatch_token_margin_seconds),
        broadcast_token_lifetime=dt.timedelta(seconds=cfg.broadcast_token_seconds),
        audit_allowed=cfg.audit_allowed_decisions,
    )


def abuse_limits(cfg: OperatorConfig) -> AbuseLimits:
    return AbuseLimits(
        token_per_source=Rate(
            cfg.token_exchange_burst_per_source, cfg.token_exchange_rate_per_source
        ),
        token_per_agent=Rate(cfg.token_exchange_burst_per_agent, cfg.token_exchange_rate_per_agent),
        failures_per_source=Rate(
            cfg.auth_failure_burst_per_source, cfg.auth_failure_rate_per_source
        ),
        max_keys=cfg.rate_limit_max_keys,
    )


def certificate_owner(cfg: OperatorConfig, api: client.ApiClient, clock: Clock) -> CertificateOwner:
    """The owner of the serving certificate of the mesh API and the webhooks: the own CA
    in its Secret, or the cert-manager Secret the configuration names."""
    hosts = [cfg.mesh_host, *([cfg.webhook_host] if cfg.webhooks else [])]
    names = serving_names(
        hosts,
        service=cfg.service_name,
        namespace=cfg.operator_namespace,
        cluster_domain=cfg.cluster_domain,
        extra=cfg.tls_extra_sans,
    )
    lifetime = dt.timedelta(seconds=cfg.tls_cert_lifetime_seconds)
    if cfg.tls_secret:
        issued = CertManagerSecret(api, cfg.operator_namespace, cfg.tls_secret)
        return CertificateOwner(names, clock=clock.now, lifetime=lifetime, issued=issued)
    store = SecretCaStore(api, cfg.operator_namespace)
    return CertificateOwner(names, clock=clock.now, lifetime=lifetime, ca_store=store)


def _dispatch_transport(cfg: OperatorConfig, guard: EgressGuard) -> Transport:
    """The coordinator's transport (the router bounds work per agent; the pool only has to
    keep up with it), batching when configured."""
    config = TransportConfig(
        max_connections_per_agent=100,
        retries=0,
        response_max_bytes=cfg.response_max_bytes,
        tailnet_proxy_url=cfg.tailnet_proxy,
        tailnet_domain=cfg.tailscale_tailnet_domain,
    )
    if cfg.batch_dispatch:
        return BatchingTransport(config, guard=guard)
    return Transport(config, guard=guard)


class MeshRuntime:
    """Everything that outlives a single handler call."""

    def __init__(self, cfg: OperatorConfig, api: client.ApiClient, clock: Clock) -> None:
        self.config = cfg
        self.api = api
        self.clock = clock
        self.registry = AgentRegistry()
        self.policies = PolicyIndex()
        self.audit = AuditLog(clock=clock)
        self.events = EventPoster(api)
        self.egress = EgressGuard(
            cfg.egress_policy(),
            tailnet_domain=cfg.tailscale_tailnet_domain if cfg.tailnet_proxy else None,
        )
        self.authority = Authority(
            auth_settings(cfg),
            registry=self.registry,
            policies=self.policies,
            keys=SecretKeyStore(api, cfg.operator_namespace),
            revocation_store=ConfigMapRevocationStore(api, cfg.operator_namespace),
            reviewer=ApiTokenReviewer(api),
            fetch_agent=AgentFetcher(api),
            audit=self.audit,
            clock=clock,
        )
        self.audit.subscribe(self._denial_to_event)
        self.health = HealthMonitor(
            HealthTracker(
                HealthPolicy(
                    degraded_after=dt.timedelta(seconds=cfg.health_degraded_seconds),
                    unreachable_after=dt.timedelta(seconds=cfg.health_unreachable_seconds),
                    write_interval=dt.timedelta(seconds=cfg.status_write_seconds),
                )
            ),
            self.registry,
            AgentStatusWriter(api),
            self.events,
            clock,
            sweep_seconds=cfg.health_sweep_seconds,
        )
        # events are not worth waiting for: one try, a short timeout
        events_transport = Transport(
            TransportConfig(
                timeout_seconds=5,
                retries=0,
                response_max_bytes=cfg.response_max_bytes,
                tailnet_proxy_url=cfg.tailnet_proxy,
                tailnet_domain=cfg.tailscale_tailnet_domain,
            ),
            guard=self.egress,
        )
        self.health_events = HealthBroadcaster(
            self.registry, self.health.tracker, self.authority, events_transport
        )
        self.health.listeners.append(self.health_events)
        self.coordinator = Coordinator(
            registry=self.registry,
            tracker=self.health.tracker,
            authority=self.authority,
            audit=self.audit,
            clock=clock,
            writer=TaskStatusWriter(api),
            events=self.events,
            router=Router(default_strategy=cfg.default_strategy, load_plugins=load_strategies),
            transport=_dispatch_transport(cfg, self.egress),
        )
        self.health.listeners.append(self.coordinator.health_changed)
        self.fast_path = FastPath(
            self.coordinator, MeshTaskApi(api), callbacks=CallbackNotifier(guard=self.egress)
        )
        self.tls = certificate_owner(cfg, api, clock)
        self.ca_bundles = CaBundlePublisher(api)
        self.devices = DeviceCache(api, clock)
        self.control_server = cfg.control_server()
        if cfg.mesh_tls:
            self.tls.listeners.append(self._publish_bundle)
        self.server = MeshServer(
            create_app(
                self.authority,
                self.health,
                self.health.tracker,
                cfg.mesh_max_body_bytes,
                fast_path=self.fast_path,
                guard=AbuseGuard(abuse_limits(cfg), self.audit),
                max_json_depth=cfg.mesh_max_json_depth,
            ),
            cfg.mesh_host,
            cfg.mesh_port,
            ssl_context=self.tls.serving.context if cfg.mesh_tls else None,
        )
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def create(cls, cfg: OperatorConfig, clock: Clock | None = None) -> MeshRuntime:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config()
        return cls(cfg, client.ApiClient(), clock or SystemClock())

    async def start(self) -> None:
        self.egress.policy = self.config.egress_policy(
            await apiserver_addresses(self.api), await service_cidrs(self.api)
        )
        policy = self.egress.policy
        logger.info(
            "egress policy: loopback %s, allow %s, deny %s, Service ranges %s, API server %s",
            "allowed" if policy.allow_loopback else "refused",
            ", ".join(map(str, policy.allow)) or "-",
            ", ".join(map(str, policy.deny)) or "-",
            ", ".join(map(str, policy.service_ranges)) or "unknown",
            ", ".join(f"{a}:{p}" for a, p in sorted(policy.apiserver, key=str)) or "unknown",
        )
        await self.authority.start()
        if self.config.mesh_tls or self.config.webhooks:
            await self._start_tls()
        await self.server.start()
        self._tasks = [
            asyncio.create_task(self._maintain_keys(), name="key maintenance"),
            asyncio.create_task(self._maintain_tls(), name="certificate maintenance"),
            asyncio.create_task(self.ca_bundles.run(), name="CA bundle publisher"),
            asyncio.create_task(self.health.run(), name="health loop"),
            asyncio.create_task(self.coordinator.run(), name="coordinator"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.stop()
        await self.health.close()
        await self.fast_path.close()
        await self.coordinator.close()
        await self.health_events.close()
        await self.events.drain()
        await self.egress.close()
        if self.control_server is not None:
            await self.control_server.close()
        await self.api.close()

    async def _maintain_keys(self) -> None:
        while True:
            await asyncio.sleep(self.config.key_check_seconds)
            try:
                await self.authority.maintain_keys()
            except Exception:  # the next tick retries; never let the loop die
                logger.exception("signing-key maintenance failed")

    async def _start_tls(self) -> None:
        """The serving certificate before anything serves; the CA bundle in the operator's
        own namespace before the mesh API answers (clients fetch it from there)."""
        try:
            await self.tls.check()
        except CertificateError as error:
            raise ValidationError(
                f"the operator's TLS material is unusable: {error}", field="tls"
            ) from error
        if self.config.mesh_tls:
            self.ca_bundles.notice(self.config.operator_namespace)
            await self.ca_bundles.publish_pending()

    async def _publish_bundle(self) -> None:
        if self.tls.bundle is not None:
            await self.ca_bundles.set_bundle(self.tls.bundle)

    async def _maintain_tls(self) -> None:
        if not (self.config.mesh_tls or self.config.webhooks):
            return
        while True:
            await asyncio.sleep(self.config.tls_check_seconds)
            try:
                await self.tls.check()
                if self.config.mesh_tls:
                    await self.ca_bundles.verify()
            except Exception:  # the next tick retries; the current certificate stays served
                logger.exception("certificate maintenance failed")

    def _denial_to_event(self, record: Record) -> None:
        if record.get("event") != "acl.decision" or record.get("decision") != "deny":
            return
        agent = self.registry.get(str(record.get("namespace")), str(record.get("agentId")))
        if agent is None:
            return
        reason = str(record.get("reason") or "")
        self.events.post(
            ObjectRef("MeshAgent", agent.namespace, agent.name, agent.uid),
            "Warning",
            "AccessDenied",
            reason or f"{record.get('action')} {record.get('resource')} denied",
        )
