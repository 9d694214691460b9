"""MeshTask: a unit of work routed to a capable agent, and its progress through the mesh."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import Field

from agent_mesh.api.common import (
    AGE_COLUMN,
    DNS_LABEL_MAX_LENGTH,
    DNS_LABEL_PATTERN,
    DNS_LABEL_RULE,
    LIST_SET,
    MAX_CAPABILITIES,
    MESSAGE_MAX_LENGTH,
    NAME_RULE,
    READY,
    CelChecked,
    Condition,
    CrdDescriptor,
    DnsLabel,
    MeshModel,
    MeshName,
    PrinterColumn,
    Timestamp,
    UniqueList,
    conditions_field,
    is_dns_label,
    observed_generation_field,
)
from agent_mesh.domain.clock import parse_rfc3339
from agent_mesh.domain.retry import AttemptOutcome as AttemptOutcome
from agent_mesh.domain.routing import TaskDemand
from agent_mesh.domain.task_queue import Priority as Priority
from agent_mesh.domain.task_reasons import MeshTaskReason as MeshTaskReason
from agent_mesh.domain.tasks import ATTEMPT_HISTORY_MAX as ATTEMPT_HISTORY_MAX
from agent_mesh.domain.tasks import DEFAULT_RETRIES as DEFAULT_RETRIES
from agent_mesh.domain.tasks import DEFAULT_TIMEOUT_SECONDS as DEFAULT_TIMEOUT_SECONDS
from agent_mesh.domain.tasks import TERMINAL_PHASES as TERMINAL_PHASES
from agent_mesh.domain.tasks import Attempt, TaskState
from agent_mesh.domain.tasks import TaskPhase as TaskPhase
from agent_mesh.domain.wire import validate

PAYLOAD_MAX_BYTES: Final = 262144
"""Default cap on spec.payload and status.result: 256 KiB of compact JSON."""

MAX_RETRIES: Final = 20


class MeshTaskCondition(StrEnum):
    """Condition types of a MeshTask, one per stage."""

    READY = READY
    """Summary: True once the task completed and status.result holds its result."""
    ASSIGNED = "Assigned"
    """An agent was chosen for the current attempt."""
    RUNNING = "Running"
    """The chosen agent accepted the current attempt and is working on it."""
    SUCCEEDED = "Succeeded"
    """The task completed (phase Completed)."""
    FAILED = "Failed"
    """The task ended without a result (phase Failed or TimedOut)."""


AGENT_REF_MESSAGE: Final = (
    "spec.agentSelector.agentRef must be the name of a MeshAgent in the task's namespace: "
    f"{DNS_LABEL_RULE}"
)


# Checked by CEL rather than a pattern in the CRD (see CelChecked).
AgentRef = Annotated[
    str,
    CelChecked(
        rule=f"self.matches('{DNS_LABEL_PATTERN}')", message=AGENT_REF_MESSAGE, accepts=is_dns_label
    ),
]


class AgentSelector(MeshModel):
    """Narrows the agents a task may go to; all given criteria must match."""

    agent_type: DnsLabel | None = Field(
        None,
        description="Only agents of this spec.agentType. Default: any type.",
    )
    labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict,
        max_length=32,
        description=(
            "Only MeshAgents whose metadata.labels contain all of these key/value pairs. "
            "Default: no label constraint."
        ),
    )
    agent_ref: AgentRef | None = Field(
        None,
        description=(
            "Pin the task to one agent: the metadata.name of a MeshAgent in the task's "
            "namespace. It must still hold the required capabilities and match the other "
            "criteria; while it is busy or unhealthy the task waits. Default: any agent."
        ),
    )


class MeshTaskSpec(MeshModel):
    """Desired work: what to do, with which input, on which kind of agent."""

    task_type: MeshName = Field(
        description=(
            f"What the task is (for example summarize); agents dispatch on it. "
            f"Allowed: {NAME_RULE}."
        ),
    )
    payload: Any = Field(
        None,
        description=(
            "Input handed to the agent as is: any JSON value. At most 256 KiB of compact JSON "
            "(operator setting); the admission webhook rejects larger payloads with their "
            "size, so pass big inputs by reference (a URL or object key)."
        ),
    )
    required_capabilities: Annotated[list[MeshName], UniqueList] = Field(
        default_factory=list,
        max_length=MAX_CAPABILITIES,
        description=(
            "Capabilities the agent must all hold (see MeshAgent spec.capabilities). "
            f"Unique, at most {MAX_CAPABILITIES}. Default: none (any agent)."
        ),
        json_schema_extra=LIST_SET,
    )
    priority: Priority = Field(
        Priority.MEDIUM,
        description=(
            "Queue priority: low, medium, high or critical; higher priorities are assigned "
            "first, FIFO within one priority. Default: medium."
        ),
    )
    timeout_seconds: int = Field(
        DEFAULT_TIMEOUT_SECONDS,
        ge=1,
        le=86400,
        description=(
            "Time limit of each attempt in seconds, 1-86400; an attempt that exceeds it "
            f"counts as failed and is retried. Default: {DEFAULT_TIMEOUT_SECONDS}."
        ),
    )
    retries: int = Field(
        DEFAULT_RETRIES,
        ge=0,
        le=MAX_RETRIES,
        description=(
            f"Retries after a failed or timed-out attempt, 0-{MAX_RETRIES}, with exponential "
            "backoff (1 s doubling up to 60 s) and on another agent when one exists. "
            "Fail-over from an unreachable agent does not use one. "
            f"Default: {DEFAULT_RETRIES}."
        ),
    )
    strategy: DnsLabel | None = Field(
        None,
        description=(
            "How to choose among capable agents: round-robin, least-loaded, "
            "capability-match, random, or the name of a plug-in strategy. Default: the "
            "operator's setting (least-loaded unless configured)."
        ),
    )
    agent_selector: AgentSelector | None = Field(
        None,
        description="Further limits which agents may run the task. Default: no limit.",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        max_length=64,
        description=(
            "Free-form key/value data passed to the agent with the task (any JSON values), "
            "for example a trace id. Not interpreted by the operator."
        ),
    )
    ttl_seconds_after_finished: int | None = Field(
        None,
        ge=0,
        description=(
            "Delete the MeshTask this many seconds after it finishes (Completed, Failed or "
            "TimedOut); 0 deletes it right away. Default: kept until deleted."
        ),
    )


class TaskAttempt(MeshModel):
    """One try of the task on one agent."""

    agent_id: str = Field(
        max_length=DNS_LABEL_MAX_LENGTH,
        description="agentId of the agent the attempt ran on.",
    )
    started_at: Timestamp | None = Field(
        None,
        description="When the attempt was dispatched to the agent (RFC 3339).",
    )
    finished_at: Timestamp | None = Field(
        None,
        description="When the attempt ended (RFC 3339); unset while it runs.",
    )
    outcome: AttemptOutcome | None = Field(
        None,
        description=(
            "How the attempt ended: Succeeded, Failed, TimedOut, or Unreachable (the agent "
            "was lost and the task failed over without using a retry). Unset while it runs."
        ),
    )
    error: str | None = Field(
        None,
        max_length=MESSAGE_MAX_LENGTH,
        description="Why the attempt failed, as reported by the agent or the operator.",
    )


class MeshTaskStatus(MeshModel):
    """Observed progress of a task, written by the operator only."""

    phase: TaskPhase | None = Field(
        None,
        description=(
            "Pending (queued or waiting for a retry), Assigned (agent chosen), Running "
            "(agent working), then one of Completed, Failed or TimedOut (the last attempt "
            "timed out and no retries remain)."
        ),
    )
    agent_id: str | None = Field(
        None,
        max_length=DNS_LABEL_MAX_LENGTH,
        description="agentId of the agent running the current attempt, or that ran the last.",
    )
    assigned_at: Timestamp | None = Field(
        None,
        description="When the current attempt was assigned to an agent (RFC 3339).",
    )
    started_at: Timestamp | None = Field(
        None,
        description="When the current attempt started running on the agent (RFC 3339).",
    )
    completed_at: Timestamp | None = Field(
        None,
        description="When the task reached Completed, Failed or TimedOut (RFC 3339).",
    )
    attempt: int = Field(
        0,
        ge=0,
        description="Number of the current (or last) attempt, starting at 1; 0 before the first.",
    )
    attempts: list[TaskAttempt] = Field(
        default_factory=list,
        max_length=ATTEMPT_HISTORY_MAX,
        description=(
            f"History of attempts, oldest first; the {ATTEMPT_HISTORY_MAX} most recent are kept."
        ),
    )
    next_retry_at: Timestamp | None = Field(
        None,
        description="When the next attempt becomes due after a failure (RFC 3339).",
    )
    result: Any = Field(
        None,
        description=(
            "The agent's result: any JSON value, capped like spec.payload (256 KiB by "
            "default). Set when phase is Completed."
        ),
    )
    error: str | None = Field(
        None,
        max_length=MESSAGE_MAX_LENGTH,
        description="Why the task failed, when phase is Failed or TimedOut.",
    )
    conditions: list[Condition] = conditions_field("task", ", ".join(MeshTaskCondition))
    observed_generation: int | None = observed_generation_field("MeshTask")


def payload_size_error(
    payload: object, field: str = "spec.payload", limit: int = PAYLOAD_MAX_BYTES
) -> str | None:
    """The error for a JSON value larger than `limit` bytes, or None when it fits.

    Size is that of the compact UTF-8 JSON encoding, so whitespace and the YAML a user
    wrote do not count. OpenAPI and CEL cannot bound an arbitrary JSON value, hence a
    webhook calls this. Raises TypeError for values JSON cannot encode.
    """
    encoded = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    size = len(encoded)
    if size <= limit:
        return None
    return (
        f"{field} is {size} bytes of JSON; the limit is {limit} bytes ({_human_size(limit)}): "
        "pass large data by reference (a URL or object key) instead"
    )


def _human_size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:g} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


MESHTASK: Final = CrdDescriptor(
    kind="MeshTask",
    plural="meshtasks",
    singular="meshtask",
    short_names=("mt",),
    description=(
        "MeshTask is a unit of work for the agent mesh. The operator queues it by priority, "
        "routes it to a healthy agent holding the required capabilities, retries and fails "
        "over, and records the result in status."
    ),
    spec_model=MeshTaskSpec,
    status_model=MeshTaskStatus,
    printer_columns=(
        PrinterColumn("Type", "string", ".spec.taskType", "Task type."),
        PrinterColumn("Priority", "string", ".spec.priority", "Queue priority."),
        PrinterColumn("Phase", "string", ".status.phase", "Where the task is in its life."),
        PrinterColumn("Agent", "string", ".status.agentId", "Agent of the current attempt."),
        PrinterColumn("Attempt", "integer", ".status.attempt", "Current attempt, from 1."),
        AGE_COLUMN,
    ),
    selectable_fields=(".spec.taskType", ".status.phase", ".status.agentId"),
)


def task_state(body: Mapping[str, Any]) -> TaskState:
    """The coordinator's record of a MeshTask object as the apiserver returns it (spec, and
    the status a previous operator wrote), read through the models (their defaults, their
    rules). A bad field raises ValidationError naming it (`spec.priority`)."""
    meta = body.get("metadata") or {}
    spec = validate(MeshTaskSpec, body.get("spec") or {}, "spec")
    status = validate(MeshTaskStatus, body.get("status") or {}, "status")
    selector = spec.agent_selector or AgentSelector()
    namespace = str(meta.get("namespace") or "")
    demand = TaskDemand(
        namespace=namespace,
        task_type=spec.task_type,
        required_capabilities=frozenset(spec.required_capabilities),
        agent_type=selector.agent_type or None,
        labels=dict(selector.labels),
        agent_ref=selector.agent_ref or None,
        strategy=spec.strategy or None,
    )
    state = TaskState(
        key=str(meta.get("uid") or ""),
        namespace=namespace,
        name=str(meta.get("name") or ""),
        task_type=spec.task_type,
        payload=spec.payload,
        demand=demand,
        priority=spec.priority,
        timeout_seconds=spec.timeout_seconds,
        retries=spec.retries,
        created_at=parse_rfc3339(meta.get("creationTimestamp")) or dt.datetime.now(dt.UTC),
        metadata={str(k): str(v) for k, v in spec.metadata.items()},
        generation=meta.get("generation"),
    )
    if status.phase is not None:
        state.phase = status.phase
    state.attempt = status.attempt
    state.agent_id = status.agent_id or None
    state.assigned_at = status.assigned_at
    state.started_at = status.started_at
    state.completed_at = status.completed_at
    state.next_retry_at = status.next_retry_at
    state.result = status.result
    state.error = status.error or None
    state.attempts.extend(
        Attempt(a.agent_id, a.started_at, a.finished_at, a.outcome, a.error)
        for a in status.attempts
        if a.started_at is not None
    )
    return state
