"""The fast path's wire contract: what a submitter sends to `POST /v1/tasks`, what an agent
sends to `POST /v1/tasks/{id}/result`, and the answer every task route gives back.

A submitted task is a MeshTask spec (the same field rules, so a task that passes here
would pass as a MeshTask and the other way round) plus `durable`; the request adds how to
answer (`wait`, `waitSeconds`, `callbackUrl`) and where (`namespace`). Unknown fields are
refused rather than ignored: a misspelt `priorty` should not silently run at medium.
Errors name the camelCase field as a JSON path (`tasks[3].timeoutSeconds`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from agent_mesh.api.common import URL_MAX_LENGTH, DnsLabel
from agent_mesh.api.meshtask import (
    MAX_RETRIES,
    PAYLOAD_MAX_BYTES,
    AgentSelector,
    MeshTaskSpec,
    payload_size_error,
)
from agent_mesh.domain.egress import target_of
from agent_mesh.domain.errors import EgressRefusedError, PayloadTooLargeError, ValidationError
from agent_mesh.domain.retry import BACKOFF_BASE, BACKOFF_CAP
from agent_mesh.domain.routing import TaskDemand
from agent_mesh.domain.tasks import TaskPhase, TaskState
from agent_mesh.domain.wire import STRICT, WireModel
from agent_mesh.mesh.http import validate

MAX_BATCH: Final = 1000
"""Tasks per request; larger batches gain nothing (the answer is one JSON document)."""
MAX_WAIT_SECONDS: Final = 3600.0
METADATA_VALUE_MAX_LENGTH: Final = 1024


def _callback_url(value: str) -> str:
    """http(s) with a host, read as the HTTP client reads it, and no numeric shorthand for
    an address. Which addresses it may reach is the egress policy's to say, when the
    submission is taken (mesh/callbacks.py)."""
    try:
        target_of(value, "callbackUrl")
    except EgressRefusedError as error:
        raise ValueError(error.message) from None
    if urlsplit(value).path.startswith("//"):  # the HTTP client would read it as a host
        raise ValueError("callbackUrl's path must not start with '//'")
    return value


CallbackUrl = Annotated[str, Field(max_length=URL_MAX_LENGTH), AfterValidator(_callback_url)]


class SelectorIn(AgentSelector):
    """spec.agentSelector, refusing unknown fields."""

    model_config = STRICT


class TaskIn(MeshTaskSpec):
    """One submitted task: MeshTask spec fields and rules, plus `durable`."""

    model_config = STRICT

    agent_selector: SelectorIn | None = Field(
        None, description="Further limits which agents may run the task. Default: no limit."
    )
    metadata: dict[str, Annotated[str, Field(max_length=METADATA_VALUE_MAX_LENGTH)]] = Field(
        default_factory=dict,
        max_length=64,
        description=(
            "Key/value strings passed to the agent with the task. Strings only: that is "
            "what agents receive, so nothing is converted behind the submitter's back."
        ),
    )
    durable: bool = Field(
        False,
        description=(
            "Create a MeshTask (survives operator restarts, status in the apiserver) "
            "instead of running the task in memory only."
        ),
    )


class OptionsIn(WireModel):
    """How and where to run the request's tasks."""

    model_config = STRICT

    namespace: DnsLabel | None = None
    """Where the tasks run and which agents may take them; default the caller's."""
    wait: bool = True
    """True: answer when every task has ended (or the wait bound passed); False: at once."""
    wait_seconds: float | None = Field(None, gt=0, le=MAX_WAIT_SECONDS)
    """Cap on a synchronous wait; default each task's whole time budget (`budget_seconds`)."""
    callback_url: CallbackUrl | None = None
    """POSTed each task's answer when it ends (best effort, one try, no credentials)."""


_NOT_SPEC: Final = {"durable", *OptionsIn.model_fields}


class SingleIn(TaskIn, OptionsIn):
    """`POST /v1/tasks` with one task: the task's fields and the options side by side."""

    model_config = STRICT


class BatchIn(OptionsIn):
    """`POST /v1/tasks` with `{"tasks": [...]}` and the options."""

    model_config = STRICT

    tasks: list[TaskIn] = Field(min_length=1, max_length=MAX_BATCH)


class ReportIn(WireModel):
    """`POST /v1/tasks/{id}/result`: an agent's later answer to a dispatch it took with 202.
    Exactly one of `result` (any JSON, null included) and `error`."""

    model_config = STRICT

    attempt: int = Field(ge=1)
    result: Any = None
    error: str | None = Field(None, min_length=1, max_length=32768)


def parse_report(data: Any) -> ReportIn:
    report = validate(ReportIn, data)
    if ("result" in report.model_fields_set) == (report.error is not None):
        raise ValidationError("send exactly one of result and error", field="result")
    return report


@dataclass(frozen=True, slots=True)
class Submission:
    """A parsed `POST /v1/tasks`: the options, the tasks, and whether it was a batch (which
    decides the answer's shape and the path prefix of field names)."""

    options: OptionsIn
    tasks: list[TaskIn]
    batch: bool


def parse_submission(data: Any, body_bytes: int) -> Submission:
    """Validate a decoded request body; ValidationError (400) or PayloadTooLargeError (413)
    naming the field. `body_bytes` is the body's size: a body no larger than the payload cap
    cannot hold a payload over it, so only bigger bodies pay for measuring payloads."""
    if isinstance(data, dict) and "tasks" in data:
        batch = validate(BatchIn, data)
        submission = Submission(batch, batch.tasks, batch=True)
    else:
        single = validate(SingleIn, data)
        submission = Submission(single, [single], batch=False)
    for index, task in enumerate(submission.tasks):
        if task.ttl_seconds_after_finished is not None and not task.durable:
            raise ValidationError(
                "ttlSecondsAfterFinished applies to durable tasks only (the answers of "
                "in-memory tasks are kept for a bounded time instead)",
                field=_field(index, submission.batch, "ttlSecondsAfterFinished"),
            )
    if body_bytes > PAYLOAD_MAX_BYTES:
        for index, task in enumerate(submission.tasks):
            field = _field(index, submission.batch, "payload")
            too_big = payload_size_error(task.payload, field)
            if too_big is not None:
                raise PayloadTooLargeError(too_big, field=field)
    return submission


def _field(index: int, batch: bool, name: str) -> str:
    return f"tasks[{index}].{name}" if batch else name


def _backoff_budget(retries: int) -> float:
    base, cap = BACKOFF_BASE.total_seconds(), BACKOFF_CAP.total_seconds()
    return sum(min(base * float(2 ** (n - 1)), cap) for n in range(1, retries + 1))


_BACKOFF_BUDGET: Final = tuple(_backoff_budget(n) for n in range(MAX_RETRIES + 1))


def budget_seconds(task: TaskIn) -> float:
    """The longest a task can take without fail-overs: every attempt's timeout plus the
    backoff before each retry. The default bound of a synchronous wait, and how long an
    in-memory task may stay unfinished before it is withdrawn."""
    return float(task.timeout_seconds * (task.retries + 1)) + _BACKOFF_BUDGET[task.retries]


def demand_of(task: TaskIn, namespace: str) -> TaskDemand:
    selector = task.agent_selector
    return TaskDemand(
        namespace=namespace,
        task_type=task.task_type,
        required_capabilities=frozenset(task.required_capabilities),
        agent_type=selector.agent_type if selector else None,
        labels=dict(selector.labels) if selector else {},
        agent_ref=selector.agent_ref if selector else None,
        strategy=task.strategy,
    )


def state_of(task: TaskIn, key: str, namespace: str, now: dt.datetime) -> TaskState:
    """The coordinator's record of an in-memory (fast-path) task: no name, so no status
    writes, no Events."""
    return TaskState(
        key=key,
        namespace=namespace,
        name=None,
        task_type=task.task_type,
        payload=task.payload,
        demand=demand_of(task, namespace),
        priority=task.priority,
        timeout_seconds=task.timeout_seconds,
        retries=task.retries,
        created_at=now,
        metadata=dict(task.metadata),
    )


def spec_of(task: TaskIn) -> dict[str, Any]:
    """The MeshTask spec of a durable task (camelCase; `durable` and the request's options
    are not spec fields)."""
    return task.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude=_NOT_SPEC, round_trip=True
    )


# --- answers ------------------------------------------------------------------------------


def answer_of(state: TaskState) -> dict[str, Any]:
    """What the task routes say about a task: `{id, namespace, phase, agentId, attempt}`
    plus `result` once Completed or `error` once it failed (or while a retry waits);
    durable tasks add their MeshTask `name`."""
    out: dict[str, Any] = {
        "id": state.key,
        "namespace": state.namespace,
        "phase": state.phase.value,
        "agentId": state.agent_id,
        "attempt": state.attempt,
    }
    if state.name is not None:
        out["name"] = state.name
    if state.phase is TaskPhase.COMPLETED:
        out["result"] = state.result
    elif state.error is not None:
        out["error"] = state.error
    return out


def answer_of_object(body: Mapping[str, Any]) -> dict[str, Any]:
    """The same answer read from a MeshTask as the apiserver returns it."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    phase = status.get("phase") or "Pending"
    out: dict[str, Any] = {
        "id": meta.get("uid"),
        "namespace": meta.get("namespace"),
        "phase": phase,
        "agentId": status.get("agentId"),
        "attempt": int(status.get("attempt") or 0),
        "name": meta.get("name"),
    }
    if phase == "Completed":
        out["result"] = status.get("result")
    elif status.get("error"):
        out["error"] = status["error"]
    return out


def encode(answer: Mapping[str, Any]) -> bytes:
    """Compact JSON, encoded once per finished task and reused by every reader."""
    return json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()
