"""A MeshTask object read into the coordinator's record: through the model, once."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from agent_mesh.api.meshtask import task_state
from agent_mesh.domain.errors import ValidationError
from agent_mesh.domain.retry import AttemptOutcome
from agent_mesh.domain.task_queue import Priority
from agent_mesh.domain.tasks import DEFAULT_RETRIES, DEFAULT_TIMEOUT_SECONDS, TaskPhase


def _body(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "t",
            "namespace": "ns",
            "uid": "uid-t",
            "generation": 2,
            "creationTimestamp": "2024-01-01T00:00:00Z",
        },
        "spec": {"taskType": "echo", **spec},
        "status": status or {},
    }


def test_unset_fields_take_the_meshtask_models_defaults() -> None:
    state = task_state(_body({}))
    assert (state.priority, state.timeout_seconds, state.retries) == (
        Priority.MEDIUM,
        DEFAULT_TIMEOUT_SECONDS,
        DEFAULT_RETRIES,
    )
    assert (state.phase, state.attempts, state.generation) == (TaskPhase.PENDING, [], 2)
    assert state.created_at == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def test_a_task_in_flight_is_restored_from_the_status_a_previous_operator_wrote() -> None:
    state = task_state(
        _body(
            {"agentSelector": {"agentType": "worker", "labels": {"team": "a"}}, "retries": 0},
            {
                "phase": "Running",
                "attempt": 2,
                "agentId": "w2",
                "startedAt": "2024-01-01T00:01:00Z",
                "attempts": [
                    {
                        "agentId": "w1",
                        "startedAt": "2024-01-01T00:00:00Z",
                        "finishedAt": "2024-01-01T00:00:30Z",
                        "outcome": "Unreachable",
                    },
                    {"agentId": "w2", "startedAt": "2024-01-01T00:01:00Z"},
                ],
            },
        )
    )
    assert (state.phase, state.attempt, state.agent_id, state.retries) == (
        TaskPhase.RUNNING,
        2,
        "w2",
        0,
    )
    assert [a.outcome for a in state.attempts] == [AttemptOutcome.UNREACHABLE, None]
    assert state.demand.agent_type == "worker" and state.demand.labels == {"team": "a"}
    assert state.deadline() == dt.datetime(2024, 1, 1, 0, 6, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("spec", "status", "field"),
    [
        ({"priority": "urgent"}, {}, "spec.priority"),
        ({"timeoutSeconds": 0}, {}, "spec.timeoutSeconds"),
        ({}, {"phase": "Sleeping"}, "status.phase"),
    ],
)
def test_a_meshtask_with_a_bad_field_is_refused_naming_the_field(
    spec: dict[str, Any], status: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        task_state(_body(spec, status))
    assert refused.value.field == field
