"""The in-memory MeshAgent registry every identity check reads."""

from __future__ import annotations

from typing import Any

import pytest

from agent_mesh.api.meshagent import agent_record
from agent_mesh.domain.agents import DEFAULT_MAX_CONCURRENT_TASKS, DEFAULT_PORT, AgentRegistry
from agent_mesh.domain.errors import ValidationError


def _body(name: str, uid: str, agent_id: str | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": uid},
        "spec": {"agentType": "worker", **({"agentId": agent_id} if agent_id else {}), **spec},
    }


def test_agent_id_defaults_to_the_name_and_workload_account_is_read() -> None:
    record = agent_record(
        _body("w1", "u1", workload={"spec": {"serviceAccountName": "sa"}}, capabilities=["a"])
    )
    assert (record.agent_id, record.service_account, record.capabilities) == ("w1", "sa", ("a",))
    assert not record.external


def test_a_user_run_agent_names_its_service_account_in_the_spec() -> None:
    assert agent_record(_body("w1", "u1", serviceAccountName="runner")).service_account == (
        "runner"
    )
    assert agent_record(_body("w2", "u2")).service_account is None


def test_credential_hash_and_external_flag_come_from_status_and_endpoint() -> None:
    body = _body("x", "u", endpoint="http://127.0.0.1:1")
    body["status"] = {
        "credential": {
            "secretName": "x-mesh-credential",
            "sha256": "ab" * 32,
            "issuedAt": "2024-01-01T00:00:00Z",
        }
    }
    record = agent_record(body)
    assert record.external
    assert record.credential_hash == "ab" * 32


def test_second_agent_claiming_an_agent_id_is_ignored() -> None:
    registry = AgentRegistry()
    assert registry.upsert(agent_record(_body("a", "u1", "shared")))
    assert not registry.upsert(agent_record(_body("b", "u2", "shared")))
    found = registry.get("ns", "shared")
    assert found is not None and found.name == "a"


def test_remove_only_forgets_the_same_uid() -> None:
    registry = AgentRegistry()
    registry.upsert(agent_record(_body("a", "u1")))
    assert registry.remove("ns", "a", uid="other") is None
    assert registry.get("ns", "a") is not None
    assert registry.remove("ns", "a", uid="u1") is not None
    assert registry.get("ns", "a") is None
    assert len(registry) == 0


def test_recreated_agent_replaces_the_old_record() -> None:
    registry = AgentRegistry()
    registry.upsert(agent_record(_body("a", "u1")))
    registry.upsert(agent_record(_body("a", "u2")))
    found = registry.get("ns", "a")
    assert found is not None and found.uid == "u2"


def test_agents_by_service_account() -> None:
    registry = AgentRegistry()
    registry.upsert(agent_record(_body("a", "1", workload={"spec": {"serviceAccountName": "s"}})))
    registry.upsert(agent_record(_body("b", "2", workload={"spec": {"serviceAccountName": "s"}})))
    registry.upsert(agent_record(_body("c", "3")))
    assert sorted(r.name for r in registry.with_service_account("ns", "s")) == ["a", "b"]
    assert registry.with_service_account("other", "s") == []


def test_unset_port_and_slots_take_the_meshagent_models_defaults() -> None:
    record = agent_record(_body("w", "u"))
    assert (record.port, record.max_concurrent_tasks) == (
        DEFAULT_PORT,
        DEFAULT_MAX_CONCURRENT_TASKS,
    )
    assert agent_record(_body("w", "u", port=9000, maxConcurrentTasks=3)).port == 9000


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"port": 0}, "spec.port"),
        ({"maxConcurrentTasks": "many"}, "spec.maxConcurrentTasks"),
        ({"agentType": None}, "spec.agentType"),
    ],
)
def test_a_meshagent_with_a_bad_field_is_refused_naming_the_field(
    spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        agent_record(_body("w", "u", **spec))
    assert refused.value.field == field
    assert refused.value.message.startswith(f"{field}: ")
