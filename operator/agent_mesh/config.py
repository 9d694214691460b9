"""Operator settings: flags override AGENT_MESH_* environment variables override defaults."""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agent_mesh.domain.egress import EgressPolicy
from agent_mesh.tailscale.sidecar import SidecarSettings, image_error
from agent_mesh.transport.control_server import ControlServer, Headscale

_DNS_NAME: Final = re.compile(
    r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
)
Cidrs = Annotated[list[str], NoDecode]
"""CIDRs, from the environment as a comma-separated list (`10.0.0.0/8,fd00::/8`)."""


class OperatorConfig(BaseSettings):
    """Everything the operator process needs to know at start-up."""

    model_config = SettingsConfigDict(env_prefix="AGENT_MESH_", extra="forbid")

    @field_validator("egress_allow", "egress_deny", "egress_service_cidrs", mode="before")
    @classmethod
    def _cidrs(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part for part in value.replace(",", " ").split() if part]
        if isinstance(value, list):
            for item in value:
                try:
                    ipaddress.ip_network(str(item), strict=False)
                except ValueError:
                    raise ValueError(f"{item!r} is not a CIDR (for example 10.0.0.0/8)") from None
        return value

    @model_validator(mode="after")
    def _api_key_needs_the_server(self) -> Self:
        if self.headscale_api_key is not None and not self.tailscale_login_server:
            raise ValueError(
                "headscale_api_key (AGENT_MESH_HEADSCALE_API_KEY) needs tailscale_login_server "
                "(AGENT_MESH_TAILSCALE_LOGIN_SERVER): the headscale it is a key of"
            )
        return self

    @model_validator(mode="after")
    def _tailnet_proxy_needs_the_domain(self) -> Self:
        if self.tailnet_proxy and not self.tailscale_tailnet_domain:
            raise ValueError(
                "tailnet_proxy (AGENT_MESH_TAILNET_PROXY) needs tailscale_tailnet_domain "
                "(AGENT_MESH_TAILSCALE_TAILNET_DOMAIN): it is used only for names under it"
            )
        return self

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> Self:
        if self.health_unreachable_seconds <= self.health_degraded_seconds:
            raise ValueError(
                "health_unreachable_seconds must be greater than health_degraded_seconds"
            )
        return self

    @field_validator("tls_extra_sans", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):  # AGENT_MESH_TLS_EXTRA_SANS=name,10.0.0.7
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("tls_extra_sans")
    @classmethod
    def _names_or_addresses(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_address(item)
            except ValueError:
                if len(item) > 253 or not _DNS_NAME.match(item.lower()):
                    raise ValueError(
                        f"{item!r} is neither an IP address nor a DNS name "
                        "(lower-case labels, an optional leading '*.')"
                    ) from None
        return value

    def egress_policy(
        self,
        apiserver: Sequence[tuple[str, int]] = (),
        discovered_service_cidrs: Sequence[str] = (),
    ) -> EgressPolicy:
        """The egress settings as a policy, plus what the operator found out about the
        cluster (the API server's addresses, the ServiceCIDR ranges)."""
        return EgressPolicy.from_settings(
            allow=self.egress_allow,
            deny=self.egress_deny,
            allow_loopback=self.egress_allow_loopback,
            service_ranges=[*self.egress_service_cidrs, *discovered_service_cidrs],
            apiserver=apiserver,
        )

    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces to watch; empty means all namespaces (cluster-wide).",
    )
    liveness_host: str = Field("127.0.0.1", description="Address of kopf's liveness endpoint.")
    liveness_port: int = Field(8080, ge=1, le=65535, description="Port of /healthz.")
    webhooks: bool = Field(
        True, description="Serve the admission webhooks (validation, sidecar injection)."
    )
    webhook_host: str = Field(
        "127.0.0.1",
        description="Address the webhook listens on and the apiserver calls it at (URL mode).",
    )
    webhook_port: int = Field(9443, ge=1, le=65535, description="Port of the webhook server.")
    webhook_configuration: str = Field(
        "agentmesh.io",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$",
        max_length=200,
        description="Name of the Validating- and MutatingWebhookConfiguration the operator "
        "registers (a DNS name with a dot); their webhooks are named after it.",
    )
    webhook_registration: Literal["self", "ca-bundle", "external"] = Field(
        "self",
        description=(
            "Who owns the webhook configurations named webhook_configuration: "
            "`self`, the operator registers them with a URL at webhook_host (local runs); "
            "`ca-bundle`, an installation (the Helm chart, config/default) creates them with a "
            "Service reference and the operator only writes their caBundle, at start and after "
            "each CA change; `external`, the operator leaves them alone (cert-manager's CA "
            "injector fills the caBundle)."
        ),
    )
    default_network: Literal["tailscale", "direct"] = Field(
        "direct", description="Network mode of agents whose spec.network is unset."
    )
    operator_namespace: str = Field(
        "agent-mesh-system",
        description="Namespace holding the signing-key Secret and the revocation ConfigMap.",
    )
    mesh_host: str = Field("127.0.0.1", description="Address the mesh API listens on.")
    mesh_port: int = Field(8090, ge=1, le=65535, description="Port of the mesh API.")
    mesh_tls: bool = Field(
        True,
        description=(
            "Serve the mesh API over TLS with the operator's certificate. Turn off only on a "
            "network that encrypts and authenticates by itself (e.g. the tailnet); agents "
            "then need AGENT_MESH_ALLOW_INSECURE_MESH=true for a non-loopback http:// URL."
        ),
    )
    tls_secret: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
        description=(
            "A Secret in the operator's namespace with tls.crt, tls.key and ca.crt that "
            "cert-manager keeps renewed: served as is (re-read every tls_check_seconds). "
            "Unset: the operator's own CA (Secret agent-mesh-ca) issues and renews."
        ),
    )
    service_name: str = Field(
        "agent-mesh",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="The Service in front of the operator: its DNS names go into the certificate.",
    )
    cluster_domain: str = Field(
        "cluster.local", description="The cluster's DNS domain (<svc>.<ns>.svc.<domain>)."
    )
    tls_extra_sans: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "More names and addresses clients use to reach the operator (comma-separated in "
            "the environment): a pod IP, a node address, a tailnet name."
        ),
    )
    tls_cert_lifetime_seconds: int = Field(
        90 * 86400,
        ge=300,
        description="Lifetime of the serving certificate the own CA issues (renewed at 2/3).",
    )
    tls_check_seconds: float = Field(
        3600,
        gt=0,
        description=(
            "How often the operator checks its serving certificate for renewal (and re-reads "
            "the cert-manager Secret) and repairs the CA bundle ConfigMaps."
        ),
    )
    mesh_max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body the mesh API reads (413 above)."
    )
    mesh_max_json_depth: int = Field(
        64,
        ge=2,
        le=1000,
        description=(
            "Deepest nesting of arrays and objects a mesh API request body may have (400 "
            "above; checked before parsing)."
        ),
    )
    token_exchange_burst_per_source: int = Field(
        200,
        ge=0,
        description=(
            "POST /v1/token requests one source address may make at once (429 above); "
            "0 turns the limit off."
        ),
    )
    token_exchange_rate_per_source: float = Field(
        50, gt=0, description="Per second, how fast a source's token-request budget refills."
    )
    token_exchange_burst_per_agent: int = Field(
        20,
        ge=0,
        description="Tokens one agent may be issued at once (429 above); 0 turns it off.",
    )
    token_exchange_rate_per_agent: float = Field(
        0.5, gt=0, description="Per second, how fast an agent's token budget refills."
    )
    auth_failure_burst_per_source: int = Field(
        100,
        ge=0,
        description=(
            "Failed authentications (401 on any route) one source address may cause before "
            "its requests are refused with 429; 0 turns the limit off."
        ),
    )
    auth_failure_rate_per_source: float = Field(
        10, gt=0, description="Per second, how fast a source's failure budget refills."
    )
    rate_limit_max_keys: int = Field(
        10_000,
        ge=100,
        description=(
            "Most sources (and agents) each limit remembers; the least recently seen is "
            "forgotten first, so memory stays bounded under a flood of addresses."
        ),
    )
    token_lifetime_seconds: int = Field(
        3600, ge=60, le=86400, description="Lifetime of issued mesh tokens."
    )
    token_leeway_seconds: int = Field(
        30, ge=0, le=300, description="Clock skew allowed when checking exp/nbf/iat."
    )
    token_audience: str = Field(
        "agent-mesh",
        description=(
            "aud of tokens for the mesh API; the API refuses any other audience (tokens "
            "for calls to agents carry aud <namespace>/<agentId>)."
        ),
    )
    recipient_token_seconds: int = Field(
        300,
        ge=30,
        le=3600,
        description=(
            "Lifetime of the tokens an agent gets by token exchange to call one peer "
            "(never past the exchanged token's own expiry)."
        ),
    )
    dispatch_token_margin_seconds: int = Field(
        10,
        ge=1,
        le=300,
        description=(
            "A task dispatch token expires at most this long after the attempt's deadline."
        ),
    )
    broadcast_token_seconds: int = Field(
        60, ge=5, le=600, description="Lifetime of the operator's health-event tokens."
    )
    token_issuer: str = Field("agent-mesh", description="iss of mesh tokens.")
    service_account_audience: str = Field(
        "agent-mesh", description="Audience pods' projected ServiceAccount tokens must have."
    )
    key_algorithm: Literal["EdDSA", "ES256"] = Field(
        "ES256",
        description=(
            "Signature algorithm of new signing keys. ES256 by default: it verified faster "
            "than EdDSA with this platform's OpenSSL (bench/auth_bench.py)."
        ),
    )
    key_rotation_seconds: int = Field(
        7 * 86400, ge=60, description="Age at which the signing key is rotated."
    )
    key_overlap_seconds: int | None = Field(
        None,
        ge=0,
        description=(
            "How long a rotated-out key still verifies; default token lifetime + leeway, "
            "so no token in circulation is cut short."
        ),
    )
    key_check_seconds: float = Field(
        30.0,
        gt=0,
        description=(
            "How often the operator checks the key Secret for a due or requested rotation "
            "(annotate the Secret agentmesh.io/rotate=<anything new> to request one)."
        ),
    )
    audit_allowed_decisions: bool = Field(
        True, description="Audit allowed ACL decisions too (denials are always audited)."
    )
    health_degraded_seconds: float = Field(
        60, gt=0, description="An agent unseen this long is degraded (gets no new tasks)."
    )
    health_unreachable_seconds: float = Field(
        300, gt=0, description="An agent unseen this long is unreachable (tasks fail over)."
    )
    health_sweep_seconds: float = Field(10, gt=0, description="How often health is re-evaluated.")
    status_write_seconds: float = Field(
        30,
        ge=0,
        description=(
            "At most one status write per agent per this many seconds, besides health "
            "transitions (which are written at once)."
        ),
    )
    default_strategy: str = Field(
        "least-loaded",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description=(
            "Routing strategy for tasks that name none: least-loaded, round-robin, "
            "capability-match, random, or an installed plug-in's name."
        ),
    )
    batch_dispatch: bool = Field(
        False,
        description=(
            "Send the tasks dispatched to one agent in the same instant as one "
            "POST /v1/tasks/batch call (agents without that route get one call per task). "
            "Off: one call per task."
        ),
    )
    egress_allow: Cidrs = Field(
        default_factory=list,
        description=(
            "CIDRs that callback URLs, heartbeat endpoints and spec.endpoint may reach even "
            "when their kind is refused (private, loopback, ...); metadata addresses, the "
            "API server and egress_deny stay refused. Comma-separated."
        ),
    )
    egress_deny: Cidrs = Field(
        default_factory=list,
        description=(
            "CIDRs no callback URL or agent endpoint may reach, whatever egress_allow says "
            "(for example the API server's own addresses behind its Service). "
            "Comma-separated."
        ),
    )
    egress_allow_loopback: bool = Field(
        False,
        description=(
            "Let callback URLs and agent endpoints reach loopback addresses (the local demo "
            "and tests run everything on 127.0.0.1). Off in a cluster."
        ),
    )
    egress_service_cidrs: Cidrs = Field(
        default_factory=list,
        description=(
            "The cluster's Service ranges (kube-apiserver --service-cluster-ip-range), "
            "refused to callback URLs and agent endpoints; the ranges of the cluster's "
            "ServiceCIDR objects are added when the operator may list them. "
            "Comma-separated."
        ),
    )
    response_max_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description=(
            "Largest response body the operator reads from an agent or a callback target "
            "(a larger one fails the call, naming this limit)."
        ),
    )
    tailscale_image: str = Field(
        "tailscale/tailscale:v1.86.5",
        description=(
            "Image of the tailscale sidecar (Tailscale's containerboot, tailscaled and "
            "tailscale): a pinned tag or digest, never latest."
        ),
    )
    tailscale_tailnet_domain: str | None = Field(
        None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$",
        description=(
            "MagicDNS suffix of the tailnet (<tailnet>.ts.net, or headscale's "
            "dns.base_domain). Unset: agents with network tailscale get no sidecar and say "
            "so in their TailnetConnected condition."
        ),
    )
    tailnet_proxy: str | None = Field(
        None,
        max_length=64,
        pattern=r"^http://(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\]):\d{1,5}$",
        description=(
            "Outbound HTTP proxy of the operator's own tailscaled on loopback (its "
            "--outbound-http-proxy-listen, e.g. http://127.0.0.1:1055): endpoints under the "
            "tailnet domain are reached through it, every other endpoint directly. Needs "
            "AGENT_MESH_TAILSCALE_TAILNET_DOMAIN. Unset: tailnet names are not dialled."
        ),
    )
    headscale_api_key: SecretStr | None = Field(
        None,
        description=(
            "API key of the headscale named by tailscale_login_server (headscale apikeys "
            "create): with it, deleting a tailscale agent removes its device there."
        ),
    )
    tailscale_login_server: str | None = Field(
        None,
        max_length=2048,
        pattern=r"^https?://[^\s/?#]+/?$",
        description=(
            "Control server URL (a headscale). Unset: Tailscale's own. When set, sidecars "
            "panic rather than ever contact Tailscale's control servers."
        ),
    )
    tailscale_auth_secret: str = Field(
        "agent-mesh-tailscale-auth",
        pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
        max_length=253,
        description=(
            "Secret (key authkey) holding the auth key sidecars join the tailnet with, in "
            "the operator's namespace; the operator copies it into each agent namespace."
        ),
    )

    @field_validator("tailscale_image")
    @classmethod
    def _pinned_image(cls, value: str) -> str:
        problem = image_error(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def control_server(self) -> ControlServer | None:
        """The control server the operator removes devices from; None without an API key."""
        if self.headscale_api_key is None or not self.tailscale_login_server:
            return None
        return Headscale(self.tailscale_login_server, self.headscale_api_key.get_secret_value())

    def watches(self, namespace: str) -> bool:
        """Whether `namespace` is one this operator watches, by kopf's reading of the
        patterns: comma-separated globs, `!glob` excluding, a leading exclusion implying `*`
        before it; any pattern matching is enough; none at all: every namespace."""
        if not self.namespaces:
            return True
        for pattern in self.namespaces:
            globs = [glob.strip() for glob in pattern.split(",")]
            if globs[0].startswith("!"):
                globs.insert(0, "*")
            matches = first = fnmatch.fnmatchcase(namespace, globs[0])
            for glob in globs[1:]:
                if glob.startswith("!"):
                    matches = matches and not fnmatch.fnmatchcase(namespace, glob[1:])
                else:
                    matches = matches or (first and fnmatch.fnmatchcase(namespace, glob))
            if matches:
                return True
        return False

    def sidecar_settings(self) -> SidecarSettings | None:
        """The Tailscale settings the sidecar builders need; None without a tailnet domain."""
        if self.tailscale_tailnet_domain is None:
            return None
        return SidecarSettings(
            image=self.tailscale_image,
            tailnet_domain=self.tailscale_tailnet_domain,
            login_server=self.tailscale_login_server,
            auth_secret=self.tailscale_auth_secret,
            auth_namespace=self.operator_namespace,
        )

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
