"""TaskSpec and TaskAnswer: what MeshClient sends to and reads from POST /v1/tasks."""

from __future__ import annotations

import pytest

from agent_mesh.domain.errors import ValidationError
from agent_mesh.sdk import MeshClient, TaskAnswer, TaskSpec, TokenSource


def test_a_spec_sends_only_what_is_set_in_camel_case() -> None:
    assert TaskSpec("echo").to_wire() == {"taskType": "echo", "payload": None}
    wire = TaskSpec(
        "summarize",
        {"t": 1},
        capabilities=["nlp"],
        priority="high",
        timeout_seconds=5,
        retries=0,
        strategy="round-robin",
        agent_type="worker",
        labels={"tier": "gpu"},
        agent_ref="w-1",
        metadata={"trace": "x"},
        durable=True,
        ttl_seconds_after_finished=60,
    ).to_wire()
    assert wire == {
        "taskType": "summarize",
        "payload": {"t": 1},
        "requiredCapabilities": ["nlp"],
        "priority": "high",
        "timeoutSeconds": 5,
        "retries": 0,
        "strategy": "round-robin",
        "metadata": {"trace": "x"},
        "durable": True,
        "ttlSecondsAfterFinished": 60,
        "agentSelector": {"agentType": "worker", "labels": {"tier": "gpu"}, "agentRef": "w-1"},
    }


def test_an_answer_reads_the_wire_form() -> None:
    answer = TaskAnswer.from_wire(
        {
            "id": "k",
            "namespace": "ns",
            "phase": "Completed",
            "agentId": "a",
            "attempt": 2,
            "result": [1],
        }
    )
    assert answer.completed and answer.finished and answer.result == [1] and answer.attempt == 2
    pending = TaskAnswer.from_wire({"id": "k", "namespace": "ns", "phase": "Running"})
    assert not pending.finished and pending.agent_id is None
    hidden = TaskAnswer.from_wire({"phase": "Completed", "resultWithheld": True})
    assert hidden.result_withheld


async def test_a_spec_and_its_fields_together_are_refused() -> None:
    tokens = TokenSource("http://127.0.0.1:9", namespace="ns", agent_id="a", credential="c")
    async with MeshClient(tokens) as mesh:
        with pytest.raises(ValidationError) as refused:
            await mesh.submit(TaskSpec("echo"), payload=1)
    assert refused.value.field == "task"
