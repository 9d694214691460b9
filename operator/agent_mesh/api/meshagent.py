"""MeshAgent: an agent that takes part in the mesh, and what the operator observes of it."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Final, Self

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from agent_mesh.api.common import (
    AGE_COLUMN,
    BUILTIN_AGENT_TYPES_TEXT,
    DNS_LABEL_MAX_LENGTH,
    DNS_LABEL_PATTERN,
    DNS_LABEL_RULE,
    LIST_SET,
    MAX_CAPABILITIES,
    NAME_RULE,
    READY,
    RESERVED_AGENT_ID_MESSAGE,
    RESERVED_AGENT_ID_RULE,
    RESERVED_AGENT_TYPE_RULE,
    URL_MAX_LENGTH,
    CelRule,
    Condition,
    CrdDescriptor,
    DnsLabel,
    MeshModel,
    MeshName,
    PrinterColumn,
    Timestamp,
    UniqueList,
    cel,
    conditions_field,
    not_reserved_agent_id,
    not_reserved_agent_type,
    observed_generation_field,
)
from agent_mesh.domain.acl import OPERATOR_SUBJECT
from agent_mesh.domain.agents import DEFAULT_MAX_CONCURRENT_TASKS as DEFAULT_MAX_CONCURRENT_TASKS
from agent_mesh.domain.agents import DEFAULT_PORT as DEFAULT_PORT
from agent_mesh.domain.agents import AgentRecord
from agent_mesh.domain.conditions import get_condition
from agent_mesh.domain.health import HealthStatus as HealthStatus
from agent_mesh.domain.wire import validate

DEFAULT_HEARTBEAT_INTERVAL_SECONDS: Final = 30

DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

# http(s) only: the operator dials it. Host part required, no whitespace anywhere.
ENDPOINT_PATTERN: Final = r"^https?://[^\s/?#]+([/?#]\S*)?$"

ROTATION_NEEDS_ENDPOINT_MESSAGE: Final = (
    "spec.credentialRotation needs spec.endpoint: only an external agent has a credential "
    "to rotate (an agent in a pod exchanges its ServiceAccount token); revoke a pod agent's "
    "tokens with spec.revokeTokensIssuedBefore"
)
ENDPOINT_OR_WORKLOAD_MESSAGE: Final = (
    "spec.endpoint and spec.workload are mutually exclusive: endpoint is for agents running "
    "outside the cluster, workload for agents the operator runs"
)


class Network(StrEnum):
    """How the operator and other agents reach the agent."""

    TAILSCALE = "tailscale"
    DIRECT = "direct"


class MeshAgentCondition(StrEnum):
    """Condition types of a MeshAgent."""

    READY = READY
    """Summary: healthy and able to take tasks."""
    REGISTERED = "Registered"
    """The operator accepted the agent into the mesh (status initialised, id unique)."""
    TAILNET_CONNECTED = "TailnetConnected"
    """The agent's Tailscale device is up and its MagicDNS name known."""
    CREDENTIAL_ISSUED = "CredentialIssued"
    """External agents: the credential Secret <name>-mesh-credential is the agent's own."""
    ENDPOINT_ALLOWED = "EndpointAllowed"
    """spec.endpoint passes the operator's egress policy (set only when spec.endpoint is)."""


class MeshAgentReason(StrEnum):
    """Reasons of MeshAgent conditions."""

    # Registered
    AGENT_REGISTERED = "AgentRegistered"
    DUPLICATE_AGENT_ID = "DuplicateAgentId"
    INVALID_SPEC = "InvalidSpec"
    # TailnetConnected
    TAILNET_DEVICE_READY = "TailnetDeviceReady"
    WAITING_FOR_TAILNET_DEVICE = "WaitingForTailnetDevice"
    TAILNET_NOT_USED = "TailnetNotUsed"
    TAILNET_NOT_CONFIGURED = "TailnetNotConfigured"
    SIDECAR_NOT_READY = "SidecarNotReady"
    SIDECAR_NOT_RUNNING = "SidecarNotRunning"
    AGENT_POD_MISSING = "AgentPodMissing"
    TAILNET_NAME_MISMATCH = "TailnetNameMismatch"
    SIDECAR_NOT_INJECTED = "SidecarNotInjected"
    WORKLOAD_REFUSED = "WorkloadRefused"
    # CredentialIssued
    CREDENTIAL_SECRET_READY = "CredentialSecretReady"  # noqa: S105  (a reason)
    CREDENTIAL_SECRET_NOT_OWNED = "CredentialSecretNotOwned"  # noqa: S105  (a reason)
    # EndpointAllowed
    ENDPOINT_ADMITTED = "EndpointAdmitted"
    ENDPOINT_REFUSED = "EndpointRefused"
    # Ready
    AGENT_HEALTHY = "AgentHealthy"
    AWAITING_HEARTBEAT = "AwaitingHeartbeat"
    AGENT_DEGRADED = "AgentDegraded"
    AGENT_UNREACHABLE = "AgentUnreachable"
    WORKLOAD_NOT_READY = "WorkloadNotReady"
    NOT_REGISTERED = "NotRegistered"


class WorkloadMetadata(MeshModel):
    """Labels and annotations of the agent's pod."""

    labels: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Labels added to the agent's pod. The operator's own labels "
            "(agentmesh.io/*, app.kubernetes.io/*) win on conflict."
        ),
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations added to the agent's pod.",
    )


class Workload(MeshModel):
    """A pod template the operator runs the agent from."""

    metadata: WorkloadMetadata | None = Field(
        None,
        description="Labels and annotations of the agent's pod.",
    )
    spec: dict[str, Any] = Field(
        description=(
            "Pod spec (core/v1 PodSpec: containers, volumes, resources, securityContext, "
            "tolerations, affinity, nodeSelector, serviceAccountName, ...) of the agent's "
            "pod. The operator runs it as a one-replica StatefulSet it owns, and adds the "
            "tailscale sidecar when spec.network is tailscale. The apiserver validates it "
            "when the StatefulSet is created; errors appear as events on the MeshAgent."
        ),
    )


class MeshAgentSpec(MeshModel):
    """Desired state of an agent: who it is, what it can do, how to reach it."""

    model_config = ConfigDict(
        json_schema_extra=cel(
            CelRule(
                rule="!has(self.endpoint) || !has(self.workload)",
                message=ENDPOINT_OR_WORKLOAD_MESSAGE,
                field_path=".endpoint",
                reason="FieldValueForbidden",
            ),
            CelRule(
                rule="!has(self.credentialRotation) || has(self.endpoint)",
                message=ROTATION_NEEDS_ENDPOINT_MESSAGE,
                field_path=".credentialRotation",
                reason="FieldValueForbidden",
            ),
        )
    )

    agent_id: Annotated[DnsLabel, AfterValidator(not_reserved_agent_id)] | None = Field(
        None,
        description=(
            f"Identity of the agent in the mesh: the subject of its tokens and part of its "
            "MagicDNS name (agent-mesh-<namespace>-<agentId>). Default: metadata.name. "
            "Immutable: to change it, create a new MeshAgent. Must be unique in the namespace "
            f"and {DNS_LABEL_RULE}; {OPERATOR_SUBJECT} is reserved for the operator."
        ),
        json_schema_extra=cel(RESERVED_AGENT_ID_RULE),
    )
    agent_name: str | None = Field(
        None,
        max_length=253,
        description=(
            "Human-readable name shown in discovery results and logs; free text, at most "
            "253 characters. Default: none (tools show agentId)."
        ),
    )
    agent_type: Annotated[DnsLabel, AfterValidator(not_reserved_agent_type)] = Field(
        description=(
            f"Role of the agent, which selects its permissions. Built-in types with default "
            f"ACLs: {BUILTIN_AGENT_TYPES_TEXT}. Any other name is a custom type, denied "
            "everything until an ACLPolicy for that type exists in the namespace. Must be "
            f"{DNS_LABEL_RULE}."
        ),
        json_schema_extra=cel(RESERVED_AGENT_TYPE_RULE),
    )
    capabilities: Annotated[list[MeshName], UniqueList] = Field(
        default_factory=list,
        max_length=MAX_CAPABILITIES,
        description=(
            f"What the agent can do (for example summarize, nlp/translate); tasks go to "
            f"agents holding all their requiredCapabilities. Each name: {NAME_RULE}. "
            f"Unique, at most {MAX_CAPABILITIES}. Default: none."
        ),
        json_schema_extra=LIST_SET,
    )
    version: str | None = Field(
        None,
        max_length=64,
        description=(
            "Version of the agent's software (for example 1.4.2); informational, shown in "
            "discovery results. At most 64 characters."
        ),
    )
    port: int = Field(
        DEFAULT_PORT,
        ge=1,
        le=65535,
        description=(
            f"Port the agent serves the mesh API on (POST /v1/tasks, GET /healthz) inside "
            f"its pod, 1-65535. Default: {DEFAULT_PORT}."
        ),
    )
    endpoint: str | None = Field(
        None,
        max_length=URL_MAX_LENGTH,
        pattern=ENDPOINT_PATTERN,
        description=(
            "Base URL of an agent running outside the cluster (http:// or https://, for "
            "example https://critic.example.com:8443). Unset: the operator derives the "
            "endpoint from the pod (direct) or the MagicDNS name (tailscale); the resolved "
            "value is in status.endpoint. Not allowed together with workload."
        ),
    )
    network: Network | None = Field(
        None,
        description=(
            "How the agent is reached: tailscale (through the tailnet, by MagicDNS name) or "
            "direct (pod IP, Service or endpoint). Default: the operator's setting "
            "(AGENT_MESH_DEFAULT_NETWORK, direct unless configured)."
        ),
    )
    max_concurrent_tasks: int = Field(
        DEFAULT_MAX_CONCURRENT_TASKS,
        ge=1,
        le=10000,
        description=(
            "Tasks the agent runs at once; it gets no new task while status.activeTasks has "
            f"reached it. 1-10000. Default: {DEFAULT_MAX_CONCURRENT_TASKS}."
        ),
    )
    heartbeat_interval_seconds: int = Field(
        DEFAULT_HEARTBEAT_INTERVAL_SECONDS,
        ge=1,
        le=3600,
        description=(
            "Seconds between the agent's heartbeats (the SDK reads it). Health comes from the "
            "time since the last one: degraded after 60 s, unreachable after 300 s (operator "
            f"settings). 1-3600. Default: {DEFAULT_HEARTBEAT_INTERVAL_SECONDS}."
        ),
    )
    service_account_name: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description=(
            "ServiceAccount the agent's own pods run as, for pods you run yourself labelled "
            "agentmesh.io/agent=<MeshAgent name>: such a pod gets this agent's mesh identity "
            "only when it runs as this ServiceAccount (so a label alone claims nothing). "
            "Default: workload.spec.serviceAccountName (default when the workload names "
            "none); give the same name when both are set. With neither, no labelled pod can "
            "claim the agent. A DNS-1123 subdomain."
        ),
    )
    workload: Workload | None = Field(
        None,
        description=(
            "Pod template for an agent the operator runs: it then owns a one-replica "
            "StatefulSet named after the MeshAgent. Unset: the agent runs elsewhere (a pod "
            "you manage, labelled agentmesh.io/agent=<name>, or outside the cluster with "
            "endpoint)."
        ),
    )

    credential_rotation: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        description=(
            "External agents: set or change it to any new value (a date, a counter) and the "
            "operator writes a fresh credential into the Secret <name>-mesh-credential, stops "
            "accepting the old one and revokes every token the agent was issued before; the "
            "agent reads the Secret again and exchanges the new credential. The value last "
            "handled is status.credential.rotation. Needs spec.endpoint. Default: unset."
        ),
    )
    revoke_tokens_issued_before: Timestamp | None = Field(
        None,
        description=(
            "Revoke every mesh token of this agent issued before this moment (RFC 3339, for "
            "example 2026-12-05T10:00:00Z), persistently; the agent then exchanges its "
            "credential or ServiceAccount token for a new one. A moment in the future counts "
            "as the moment the operator applies it; an earlier value than one applied undoes "
            "nothing (a revocation cannot be withdrawn). The value last applied is "
            "status.tokensRevokedBefore. Default: unset."
        ),
    )

    @model_validator(mode="after")
    def _endpoint_or_workload(self) -> Self:
        if self.endpoint is not None and self.workload is not None:
            raise ValueError(ENDPOINT_OR_WORKLOAD_MESSAGE)
        if self.credential_rotation is not None and self.endpoint is None:
            raise ValueError(ROTATION_NEEDS_ENDPOINT_MESSAGE)
        return self


class TailscaleStatus(MeshModel):
    """The agent's device on the tailnet, read from its Tailscale state Secret."""

    hostname: str | None = Field(
        None,
        max_length=253,
        description="MagicDNS host name: agent-mesh-<namespace>-<agentId>.",
    )
    dns_name: str | None = Field(
        None,
        max_length=253,
        description=(
            "Fully qualified MagicDNS name (for example "
            "agent-mesh-production-worker-1.tailnet.ts.net)."
        ),
    )
    ips: Annotated[list[str], UniqueList] = Field(
        default_factory=list,
        max_length=8,
        description="Tailnet IP addresses of the device (IPv4 and IPv6).",
        json_schema_extra=LIST_SET,
    )
    device_id: str | None = Field(
        None,
        max_length=253,
        description="Tailscale device ID, for finding the device in the admin console.",
    )


class CredentialStatus(MeshModel):
    """Where an external agent's mesh credential is, and its hash (never the credential)."""

    secret_name: str = Field(
        max_length=253,
        description=(
            "Secret in this namespace holding the credential (key `credential`) that the "
            "agent exchanges for a mesh token at POST /v1/token. Rotate it with "
            "spec.credentialRotation."
        ),
    )
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description=(
            "Hex SHA-256 of the credential: the operator verifies against this, so it never "
            "reads the Secret to authenticate. The credential has 256 random bits, so the "
            "hash cannot be inverted."
        ),
    )
    issued_at: Timestamp = Field(description="When the credential was created (RFC 3339).")
    rotation: str | None = Field(
        None,
        max_length=253,
        description=(
            "The spec.credentialRotation this credential was issued for; a different value "
            "in spec makes the operator rotate it."
        ),
    )


class MeshAgentStatus(MeshModel):
    """Observed state of an agent, written by the operator only."""

    health_status: HealthStatus | None = Field(
        None,
        description=(
            "pending until the first heartbeat, then healthy (seen < 60 s ago), degraded "
            "(60-300 s, gets no new tasks) or unreachable (> 300 s, its running tasks fail "
            "over). Thresholds are operator settings."
        ),
    )
    last_seen: Timestamp | None = Field(
        None,
        description=(
            "Time of the last heartbeat (RFC 3339). Written on health changes and at most "
            "every 30 s otherwise, so it may lag the real last heartbeat by up to 30 s."
        ),
    )
    registered_at: Timestamp | None = Field(
        None,
        description="When the operator registered the agent in the mesh (RFC 3339).",
    )
    endpoint: str | None = Field(
        None,
        max_length=URL_MAX_LENGTH,
        description="URL the mesh uses to reach the agent, resolved from spec and network.",
    )
    tailscale: TailscaleStatus | None = Field(
        None,
        description="The agent's Tailscale device, when spec.network is tailscale.",
    )
    active_tasks: int = Field(
        0,
        ge=0,
        description="Tasks assigned to the agent and not yet finished.",
    )
    completed_tasks: int = Field(
        0,
        ge=0,
        description="Tasks the agent completed successfully since it was registered.",
    )
    failed_tasks: int = Field(
        0,
        ge=0,
        description="Task attempts that failed or timed out on this agent since registration.",
    )
    avg_execution_ms: float | None = Field(
        None,
        ge=0,
        description="Mean duration of the agent's completed tasks, in milliseconds.",
    )
    credential: CredentialStatus | None = Field(
        None,
        description="External agents (spec.endpoint set): the credential the operator issued.",
    )
    conditions: list[Condition] = conditions_field("agent", ", ".join(MeshAgentCondition))
    tokens_revoked_before: Timestamp | None = Field(
        None,
        description=(
            "The spec.revokeTokensIssuedBefore the operator last applied: tokens of the agent "
            "issued before it are refused."
        ),
    )
    observed_generation: int | None = observed_generation_field("MeshAgent")


# Effective identity: spec.agentId, or metadata.name when unset (metadata.name never changes).
_EFFECTIVE_ID = "(has({o}.spec.agentId) ? {o}.spec.agentId : {o}.metadata.name)"

AGENT_ID_IMMUTABLE_MESSAGE: Final = (
    "spec.agentId is immutable (unset means metadata.name): it is the agent's identity in "
    "tokens and MagicDNS; create a new MeshAgent to change it"
)
NAME_AS_AGENT_ID_MESSAGE: Final = (
    f"metadata.name must be {DNS_LABEL_RULE} when spec.agentId is unset, because agentId "
    "defaults to it; shorten the name or set spec.agentId"
)

MESHAGENT: Final = CrdDescriptor(
    kind="MeshAgent",
    plural="meshagents",
    singular="meshagent",
    short_names=("ma",),
    description=(
        "MeshAgent declares an AI agent that takes part in the agent mesh: its identity, "
        "type, capabilities and how to reach it. The operator tracks its heartbeats and "
        "health in status and routes MeshTasks to it."
    ),
    spec_model=MeshAgentSpec,
    status_model=MeshAgentStatus,
    printer_columns=(
        PrinterColumn("Type", "string", ".spec.agentType", "Agent type."),
        PrinterColumn("Health", "string", ".status.healthStatus", "Health from heartbeats."),
        PrinterColumn("Active", "integer", ".status.activeTasks", "Tasks in progress."),
        PrinterColumn("Capabilities", "string", ".spec.capabilities", "What the agent can do."),
        PrinterColumn("Last Seen", "date", ".status.lastSeen", "Time of the last heartbeat."),
        PrinterColumn(
            "Endpoint", "string", ".status.endpoint", "URL the mesh reaches it at.", priority=1
        ),
        PrinterColumn(
            "Tailnet",
            "string",
            ".status.tailscale.dnsName",
            "MagicDNS name of its Tailscale device.",
            priority=1,
        ),
        AGE_COLUMN,
    ),
    root_rules=(
        CelRule(
            rule=f"{_EFFECTIVE_ID.format(o='self')} == {_EFFECTIVE_ID.format(o='oldSelf')}",
            message=AGENT_ID_IMMUTABLE_MESSAGE,
            field_path=".spec.agentId",
            reason="FieldValueInvalid",
        ),
        CelRule(
            rule=(
                "has(self.spec.agentId) || "
                f"(size(self.metadata.name) <= {DNS_LABEL_MAX_LENGTH} && "
                f"self.metadata.name.matches('{DNS_LABEL_PATTERN}'))"
            ),
            message=NAME_AS_AGENT_ID_MESSAGE,
        ),
        CelRule(  # metadata.name as the agentId; spec.agentId has the rule on its field
            rule=f"has(self.spec.agentId) || self.metadata.name != '{OPERATOR_SUBJECT}'",
            message=RESERVED_AGENT_ID_MESSAGE,
            reason="FieldValueForbidden",
        ),
    ),
    selectable_fields=(".spec.agentType",),
)


def agent_record(body: Mapping[str, Any]) -> AgentRecord:
    """The mesh's record of a MeshAgent object as the apiserver returns it, read through
    the models (their defaults, their rules). A bad field raises ValidationError naming it
    (`spec.port`)."""
    meta = body.get("metadata") or {}
    raw_status = body.get("status") or {}
    spec = validate(MeshAgentSpec, body.get("spec") or {}, "spec")
    status = validate(MeshAgentStatus, raw_status, "status")
    name = str(meta.get("name") or "")
    pod_account = spec.workload.spec.get("serviceAccountName") if spec.workload else None
    return AgentRecord(
        namespace=str(meta.get("namespace") or ""),
        name=name,
        uid=str(meta.get("uid") or ""),
        agent_id=spec.agent_id or name,
        agent_type=spec.agent_type,
        capabilities=tuple(spec.capabilities),
        # a workload naming none runs as the per-agent ServiceAccount (named after it)
        service_account=(
            spec.service_account_name or pod_account or (name if spec.workload else None)
        ),
        credential_hash=status.credential.sha256 if status.credential else None,
        external=bool(spec.endpoint),
        endpoint=spec.endpoint or None,
        port=spec.port,
        max_concurrent_tasks=spec.max_concurrent_tasks,
        version=spec.version or None,
        workload=spec.workload is not None,
        network=spec.network.value if spec.network else None,
        last_seen=status.last_seen,
        health=status.health_status,
        active_tasks=status.active_tasks,
        completed_tasks=status.completed_tasks,
        failed_tasks=status.failed_tasks,
        avg_execution_ms=status.avg_execution_ms,
        status_endpoint=status.endpoint or None,
        tailnet_endpoint=_tailnet_endpoint(spec, status, raw_status),
        tailnet_device=(
            (status.tailscale.device_id, status.tailscale.hostname)
            if status.tailscale and status.tailscale.device_id and status.tailscale.hostname
            else None
        ),
        # as written: the status builders compare them with what they would write
        conditions=tuple(raw_status.get("conditions") or ()),
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        generation=meta.get("generation"),
        resource_version=meta.get("resourceVersion"),
    )


def _tailnet_endpoint(
    spec: MeshAgentSpec, status: MeshAgentStatus, raw_status: Mapping[str, Any]
) -> str | None:
    """status.endpoint when it is the device's MagicDNS URL and TailnetConnected is True
    (a managed or an injected agent's): the operator writes it so only when it can dial
    the tailnet (its tailnet proxy)."""
    connected = get_condition(
        raw_status.get("conditions") or [], MeshAgentCondition.TAILNET_CONNECTED.value
    )
    if connected is None or connected.get("status") != "True":
        return None
    if status.tailscale is None or not status.tailscale.dns_name:
        return None
    url = f"http://{status.tailscale.dns_name.rstrip('.')}:{spec.port}"
    return url if status.endpoint == url else None
