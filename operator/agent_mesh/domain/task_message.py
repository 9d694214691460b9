"""The operator→agent task message, once: what the coordinator sends, what the batching
transport coalesces, what the SDK agent reads.

`POST /v1/tasks` carries one `TaskRequest`, `POST /v1/tasks/batch` a `TaskBatch`; on the
wire both are camelCase (`taskUid`, `attempt`, `taskType`, `payload`, `metadata`). The
sender builds the message from values already checked where they entered the mesh, so it
constructs without validating (`TaskRequest.of`, the dispatch hot path); the agent
validates on receipt (`validate`, a bad message names its field: `tasks[3].taskUid`).
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import Field

from agent_mesh.domain.wire import WireModel

BATCH_MAX: Final = 1000
"""Tasks per `POST /v1/tasks/batch`."""


class TaskRequest(WireModel):
    """What the coordinator sends to `POST /v1/tasks`: one attempt of one task."""

    task_uid: str = Field(min_length=1, max_length=128)
    attempt: int = Field(1, ge=1)
    task_type: str = Field(min_length=1, max_length=63)
    payload: Any = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(
        cls,
        task_uid: str,
        attempt: int,
        task_type: str,
        payload: Any,
        metadata: dict[str, str],
    ) -> TaskRequest:
        """The message for values the sender already holds checked: built without
        validating them again (one per dispatch; the agent validates what it receives).
        What `model_construct` does, minus its per-field loop (a quarter of its cost, on
        the dispatch hot path): the fields, all set, no extras, no private attributes."""
        message = _new(cls)
        _set(
            message,
            "__dict__",
            {
                "task_uid": task_uid,
                "attempt": attempt,
                "task_type": task_type,
                "payload": payload,
                "metadata": metadata,
            },
        )
        _set(message, "__pydantic_fields_set__", set(_ALL_FIELDS))
        _set(message, "__pydantic_extra__", None)
        _set(message, "__pydantic_private__", None)
        return message

    @property
    def key(self) -> tuple[str, int]:
        """(task uid, attempt): what an answer is matched by."""
        return self.task_uid, self.attempt

    def to_json(self) -> str:
        """The message as sent: camelCase JSON."""
        return self.model_dump_json(by_alias=True)


_new = TaskRequest.__new__
_set = object.__setattr__
_ALL_FIELDS: Final = frozenset(TaskRequest.model_fields)


class TaskBatch(WireModel):
    """What `POST /v1/tasks/batch` takes: several task requests in one call."""

    tasks: list[TaskRequest] = Field(min_length=1, max_length=BATCH_MAX)

    @classmethod
    def of(cls, tasks: list[TaskRequest]) -> TaskBatch:
        """A batch of messages already built (`TaskRequest.of`), without validating."""
        return cls.model_construct(tasks=tasks)

    def to_json(self) -> str:
        """The batch as sent: camelCase JSON, each task encoded once."""
        return self.model_dump_json(by_alias=True)
