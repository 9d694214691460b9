"""The operator→agent task message: one model, built by the coordinator, read by the SDK."""

from __future__ import annotations

import json

import pytest

from agent_mesh.domain.errors import ValidationError
from agent_mesh.domain.task_message import TaskBatch, TaskRequest
from agent_mesh.domain.wire import validate_json
from agent_mesh.sdk import agent as sdk_agent


def sent() -> TaskRequest:
    """What dispatch builds for one attempt."""
    return TaskRequest.of("uid-1", 2, "summarize", {"text": "héllo", "n": [1, 2.5]}, {"t": "x"})


def test_the_message_the_coordinator_sends_is_what_the_sdk_parses() -> None:
    wire = sent().to_json()
    assert sdk_agent.TaskRequest is TaskRequest and sdk_agent.TaskBatch is TaskBatch
    assert validate_json(TaskRequest, wire, "task request") == sent()


def test_the_dispatch_message_is_the_model_pydantic_builds() -> None:
    """TaskRequest.of skips model_construct's field loop: what it builds must still be,
    to pydantic, the same model (equal, all fields set, copyable, dumped the same)."""
    built = sent()
    constructed = TaskRequest.model_construct(**built.__dict__)
    validated = TaskRequest.model_validate(built.model_dump())
    assert built == constructed == validated
    assert built.model_fields_set == validated.model_fields_set == set(TaskRequest.model_fields)
    assert built.model_dump(by_alias=True) == validated.model_dump(by_alias=True)
    assert built.model_copy(update={"attempt": 3}).key == ("uid-1", 3)
    assert built.model_extra is None


def test_the_wire_keeps_its_camel_case_keys() -> None:
    assert json.loads(sent().to_json()) == {
        "taskUid": "uid-1",
        "attempt": 2,
        "taskType": "summarize",
        "payload": {"text": "héllo", "n": [1, 2.5]},
        "metadata": {"t": "x"},
    }


def test_a_batch_round_trips_each_task_in_order() -> None:
    tasks = [sent(), TaskRequest.of("uid-2", 1, "echo", None, {})]
    parsed = validate_json(TaskBatch, TaskBatch.of(tasks).to_json(), "task batch")
    assert parsed.tasks == tasks
    assert [t.key for t in parsed.tasks] == [("uid-1", 2), ("uid-2", 1)]


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (TaskRequest, '{"attempt": 1, "taskType": "echo"}', "taskUid"),
        (TaskRequest, '{"taskUid": "u", "attempt": 0, "taskType": "echo"}', "attempt"),
        (TaskRequest, '{"taskUid": "u", "taskType": "echo", "metadata": {"a": 1}}', "metadata.a"),
        (
            TaskBatch,
            '{"tasks": [{"taskUid": "u", "taskType": "e"}, {"taskUid": "v"}]}',
            "tasks[1].taskType",
        ),
        (TaskBatch, '{"tasks": []}', "tasks"),
        (TaskRequest, "{nope", "body"),
    ],
)
def test_a_bad_message_names_the_field(model: type[TaskRequest], body: str, field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        validate_json(model, body, "task request")
    assert raised.value.field == field
    assert raised.value.message.startswith(f"task request is invalid: {field}: ")
