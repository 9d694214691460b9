"""Tasks as MeshClient submits them to the mesh API's fast path, and their answers.

`TaskSpec` carries the MeshTask spec fields (snake_case here, camelCase on the wire);
`TaskAnswer` is what `POST /v1/tasks` and `GET /v1/tasks/{id}` report about one task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

FINAL_PHASES: Final = frozenset({"Completed", "Failed", "TimedOut"})


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task to submit; None fields take the operator's defaults (priority medium,
    timeout 300 s, 3 retries, the operator's strategy)."""

    task_type: str
    payload: Any = None
    capabilities: Sequence[str] = ()
    priority: str | None = None
    timeout_seconds: int | None = None
    retries: int | None = None
    strategy: str | None = None
    agent_type: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    agent_ref: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    durable: bool = False
    ttl_seconds_after_finished: int | None = None
    """Durable tasks only: delete the MeshTask this long after it finishes."""

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"taskType": self.task_type, "payload": self.payload}
        optional = {
            "requiredCapabilities": list(self.capabilities) or None,
            "priority": self.priority,
            "timeoutSeconds": self.timeout_seconds,
            "retries": self.retries,
            "strategy": self.strategy,
            "metadata": dict(self.metadata) or None,
            "durable": self.durable or None,
            "ttlSecondsAfterFinished": self.ttl_seconds_after_finished,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        selector = {
            "agentType": self.agent_type,
            "labels": dict(self.labels) or None,
            "agentRef": self.agent_ref,
        }
        selector = {k: v for k, v in selector.items() if v is not None}
        if selector:
            out["agentSelector"] = selector
        return out


@dataclass(frozen=True, slots=True)
class TaskAnswer:
    """A task as the mesh reports it: `result` once Completed, `error` once it failed.
    `name` is the MeshTask's for durable tasks. `result_withheld` means the caller may
    read the task but not its result."""

    id: str | None
    namespace: str
    phase: str
    agent_id: str | None
    attempt: int
    result: Any = None
    error: str | None = None
    name: str | None = None
    result_withheld: bool = False

    @property
    def finished(self) -> bool:
        return self.phase in FINAL_PHASES

    @property
    def completed(self) -> bool:
        return self.phase == "Completed"

    @classmethod
    def from_wire(cls, item: Mapping[str, Any]) -> TaskAnswer:
        return cls(
            id=item.get("id"),
            namespace=str(item.get("namespace") or ""),
            phase=str(item.get("phase") or ""),
            agent_id=item.get("agentId"),
            attempt=int(item.get("attempt") or 0),
            result=item.get("result"),
            error=item.get("error"),
            name=item.get("name"),
            result_withheld=bool(item.get("resultWithheld")),
        )
