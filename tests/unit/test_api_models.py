"""The CRD models as users meet them: defaults, wire names, and errors that name the field."""

from __future__ import annotations

import datetime as dt
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from agent_mesh.api import (
    API_VERSION,
    PAYLOAD_MAX_BYTES,
    READY,
    ACLPolicyCondition,
    ACLPolicyReason,
    ACLPolicySpec,
    ACLPolicyStatus,
    Action,
    AttemptOutcome,
    Condition,
    ConditionStatus,
    HealthStatus,
    MeshAgentCondition,
    MeshAgentReason,
    MeshAgentSpec,
    MeshAgentStatus,
    MeshTaskCondition,
    MeshTaskReason,
    MeshTaskSpec,
    MeshTaskStatus,
    Network,
    Priority,
    TaskPhase,
    payload_size_error,
)
from agent_mesh.domain.clock import FakeClock
from agent_mesh.domain.conditions import set_condition

pytestmark = pytest.mark.unit

SAMPLES = Path(__file__).resolve().parents[2] / "config" / "samples"
SPEC_MODELS: dict[str, type[BaseModel]] = {
    "MeshAgent": MeshAgentSpec,
    "MeshTask": MeshTaskSpec,
    "ACLPolicy": ACLPolicySpec,
}


def _rejected_fields(model: type[BaseModel], body: Any) -> set[str]:
    """The fields `model` names when it refuses `body` (it must refuse it)."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


# -- defaults (DESIGN §2) --------------------------------------------------------------


def test_meshagent_defaults_match_the_design() -> None:
    spec = MeshAgentSpec.model_validate({"agentType": "worker"})
    assert spec.port == 8080
    assert spec.max_concurrent_tasks == 10
    assert spec.heartbeat_interval_seconds == 30
    assert spec.capabilities == []
    # Unset means "the operator decides": agentId from metadata.name, network from config.
    assert spec.agent_id is None
    assert spec.network is None
    assert spec.endpoint is None
    assert spec.workload is None


def test_meshtask_defaults_match_the_design() -> None:
    spec = MeshTaskSpec.model_validate({"taskType": "summarize"})
    assert spec.priority is Priority.MEDIUM
    assert spec.timeout_seconds == 300
    assert spec.retries == 3
    assert spec.payload is None
    assert spec.required_capabilities == []
    assert spec.strategy is None
    assert spec.ttl_seconds_after_finished is None


def test_aclpolicy_defaults_grant_nothing_and_reach_only_the_own_namespace() -> None:
    spec = ACLPolicySpec.model_validate({"agentType": "researcher"})
    assert spec.allowed_actions == []
    assert spec.allowed_resources == []
    assert spec.namespaces == []


def test_payload_cap_is_256_kib() -> None:
    assert PAYLOAD_MAX_BYTES == 256 * 1024


# -- wire format -----------------------------------------------------------------------


def test_specs_read_camel_case_and_write_camel_case() -> None:
    spec = MeshAgentSpec.model_validate(
        {"agentType": "worker", "maxConcurrentTasks": 4, "heartbeatIntervalSeconds": 5}
    )
    assert spec.max_concurrent_tasks == 4
    wire = spec.to_wire()
    assert wire["maxConcurrentTasks"] == 4
    assert wire["heartbeatIntervalSeconds"] == 5
    assert "max_concurrent_tasks" not in wire


def test_python_code_may_build_models_by_field_name() -> None:
    spec = MeshTaskSpec(task_type="summarize", timeout_seconds=60)
    assert spec.to_wire()["timeoutSeconds"] == 60


def test_to_wire_leaves_out_unset_optionals() -> None:
    wire = MeshAgentSpec(agent_type="worker").to_wire()
    assert "agentId" not in wire
    assert "network" not in wire
    assert wire["port"] == 8080


def test_unknown_fields_from_a_newer_schema_are_ignored() -> None:
    spec = MeshAgentSpec.model_validate({"agentType": "worker", "futureField": True})
    assert "futureField" not in spec.to_wire()


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_samples_are_valid_specs(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    ours = [d for d in documents if d.get("apiVersion") == API_VERSION]
    assert ours, f"{path.name} holds no {API_VERSION} object"
    for doc in ours:
        SPEC_MODELS[doc["kind"]].model_validate(doc["spec"])


# -- validation errors name the field -----------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"agentType": "worker", "agentId": "Worker_1"}, "agentId"),
        ({"agentType": "worker", "agentId": "a" * 64}, "agentId"),
        ({"agentType": "Worker"}, "agentType"),
        ({"agentType": "worker", "port": 0}, "port"),
        ({"agentType": "worker", "port": 65536}, "port"),
        ({"agentType": "worker", "maxConcurrentTasks": 0}, "maxConcurrentTasks"),
        ({"agentType": "worker", "heartbeatIntervalSeconds": 3601}, "heartbeatIntervalSeconds"),
        ({"agentType": "worker", "network": "wireguard"}, "network"),
        ({"agentType": "worker", "endpoint": "ftp://agent.example.com"}, "endpoint"),
        ({"agentType": "worker", "endpoint": "https://"}, "endpoint"),
        ({"agentType": "worker", "capabilities": ["Summarize"]}, "capabilities.0"),
        ({"agentType": "worker", "capabilities": ["a", "b", "a"]}, "capabilities"),
        ({}, "agentType"),
        ({"agentType": "mesh-operator"}, "agentType"),
        ({"agentType": "worker", "agentId": "agent-mesh-operator"}, "agentId"),
        ({"agentType": "worker", "serviceAccountName": "Runner_SA"}, "serviceAccountName"),
    ],
)
def test_bad_meshagent_specs_are_rejected_naming_the_field(
    spec: dict[str, Any], field: str
) -> None:
    assert field in _rejected_fields(MeshAgentSpec, spec)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"taskType": "summarize", "priority": "urgent"}, "priority"),
        ({"taskType": "summarize", "timeoutSeconds": 0}, "timeoutSeconds"),
        ({"taskType": "summarize", "retries": -1}, "retries"),
        ({"taskType": "summarize", "retries": 21}, "retries"),
        ({"taskType": "summarize", "ttlSecondsAfterFinished": -1}, "ttlSecondsAfterFinished"),
        ({"taskType": "summarize", "strategy": "Least Loaded"}, "strategy"),
        ({"taskType": "Summarize it"}, "taskType"),
        (
            {"taskType": "summarize", "agentSelector": {"agentRef": "Worker_1"}},
            "agentSelector.agentRef",
        ),
        ({}, "taskType"),
    ],
)
def test_bad_meshtask_specs_are_rejected_naming_the_field(spec: dict[str, Any], field: str) -> None:
    assert field in _rejected_fields(MeshTaskSpec, spec)


def _admit(**fields: Any) -> dict[str, Any]:
    """One spec.admit rule, valid unless a field is overridden."""
    return {
        "namespace": "team-a",
        "agentTypes": ["*"],
        "actions": ["execute"],
        "resources": ["*"],
        **fields,
    }


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"agentType": "researcher", "allowedActions": ["fly"]}, "allowedActions.0"),
        ({"agentType": "researcher", "deniedActions": ["read", "read"]}, "deniedActions"),
        ({"agentType": "researcher", "allowedResources": ["Tasks"]}, "allowedResources.0"),
        ({"agentType": "researcher", "namespaces": ["Prod"]}, "namespaces.0"),
        ({"agentType": "mesh-operator", "allowedActions": ["admin"]}, "agentType"),
        ({"agentType": "w", "admit": [_admit(namespace="*")]}, "admit.0.namespace"),
        ({"agentType": "w", "admit": [_admit(namespace="Team A")]}, "admit.0.namespace"),
        ({"agentType": "w", "admit": [_admit(agentTypes=[])]}, "admit.0.agentTypes"),
        (
            {"agentType": "w", "admit": [_admit(agentTypes=["mesh-operator"])]},
            "admit.0.agentTypes.0",
        ),
        ({"agentType": "w", "admit": [_admit(actions=["fly"])]}, "admit.0.actions.0"),
        ({"agentType": "w", "admit": [_admit(resources=[])]}, "admit.0.resources"),
        ({"agentType": "w", "admit": [{"namespace": "team-a"}]}, "admit.0.agentTypes"),
    ],
)
def test_bad_aclpolicy_specs_are_rejected_naming_the_field(
    spec: dict[str, Any], field: str
) -> None:
    assert field in _rejected_fields(ACLPolicySpec, spec)


def test_an_admit_rule_is_read_with_wildcard_types_and_resources() -> None:
    spec = ACLPolicySpec.model_validate({"agentType": "worker", "admit": [_admit()]})
    rule = spec.admit[0]
    assert (rule.namespace, rule.agent_types, rule.actions, rule.resources) == (
        "team-a",
        ["*"],
        [Action.EXECUTE],
        ["*"],
    )


def test_custom_agent_types_are_accepted() -> None:
    assert MeshAgentSpec.model_validate({"agentType": "researcher"}).agent_type == "researcher"


def test_capability_names_may_be_namespaced() -> None:
    spec = MeshAgentSpec.model_validate(
        {"agentType": "worker", "capabilities": ["nlp/summarize", "code.review", "py3_12"]}
    )
    assert spec.capabilities == ["nlp/summarize", "code.review", "py3_12"]


def test_wildcards_are_accepted_where_the_acl_allows_them() -> None:
    spec = ACLPolicySpec.model_validate(
        {
            "agentType": "orchestrator",
            "allowedActions": ["*"],
            "allowedResources": ["*"],
            "namespaces": ["*", "staging"],
        }
    )
    assert spec.allowed_actions == [Action.ALL]
    assert spec.namespaces == ["*", "staging"]


def test_agent_ref_error_says_what_it_must_name() -> None:
    with pytest.raises(ValidationError, match=r"spec\.agentSelector\.agentRef must be the name"):
        MeshTaskSpec.model_validate({"taskType": "x", "agentSelector": {"agentRef": "A_B"}})


def test_endpoint_and_workload_are_mutually_exclusive() -> None:
    with pytest.raises(ValidationError, match=r"spec\.endpoint and spec\.workload"):
        MeshAgentSpec.model_validate(
            {
                "agentType": "worker",
                "endpoint": "https://agent.example.com",
                "workload": {"spec": {"containers": [{"name": "agent", "image": "agent:1"}]}},
            }
        )


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:18080", "https://critic.example.com:8443/mesh", "http://svc.ns.svc"],
)
def test_http_and_https_endpoints_are_accepted(url: str) -> None:
    assert MeshAgentSpec.model_validate({"agentType": "critic", "endpoint": url}).endpoint == url


def test_workload_pod_spec_is_kept_as_written() -> None:
    pod_spec = {"containers": [{"name": "agent", "image": "agent:1", "ports": [{"port": 1}]}]}
    spec = MeshAgentSpec.model_validate(
        {"agentType": "worker", "workload": {"metadata": {"labels": {"a": "b"}}, "spec": pod_spec}}
    )
    assert spec.to_wire()["workload"]["spec"] == pod_spec


def test_payload_and_metadata_accept_any_json() -> None:
    payload = [1, "two", {"three": [None, True, 4.5]}]
    spec = MeshTaskSpec.model_validate(
        {"taskType": "x", "payload": payload, "metadata": {"trace": {"id": 7}}}
    )
    assert spec.to_wire()["payload"] == payload
    assert spec.metadata == {"trace": {"id": 7}}


# -- status ---------------------------------------------------------------------------


def test_conditions_written_by_the_domain_fit_the_condition_model() -> None:
    now = FakeClock().now()
    conditions = set_condition(
        [],
        MeshAgentCondition.READY,
        "True",
        MeshAgentReason.AGENT_HEALTHY,
        "",
        generation=3,
        now=now,
    )
    condition = Condition.model_validate(conditions[0])
    assert condition.status is ConditionStatus.TRUE
    assert condition.observed_generation == 3
    assert json.loads(json.dumps(conditions)) == [condition.to_wire()]


def test_condition_timestamps_are_rfc3339_utc() -> None:
    condition = Condition.model_validate(_condition())
    assert condition.last_transition_time == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert condition.to_wire()["lastTransitionTime"] == "2026-01-01T00:00:00Z"


def _condition(**changes: str) -> dict[str, str]:
    return {
        "type": "Ready",
        "status": "True",
        "reason": "AgentHealthy",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    } | changes


def test_condition_without_timezone_is_rejected() -> None:
    assert "lastTransitionTime" in _rejected_fields(
        Condition, _condition(lastTransitionTime="2026-01-01T00:00:00")
    )


def test_condition_status_is_true_false_or_unknown() -> None:
    assert "status" in _rejected_fields(Condition, _condition(status="yes"))


def test_status_models_read_what_the_operator_writes() -> None:
    agent = MeshAgentStatus.model_validate(
        {
            "healthStatus": "healthy",
            "lastSeen": "2026-01-01T00:00:00Z",
            "activeTasks": 2,
            "tailscale": {"hostname": "agent-mesh-prod-w1", "ips": ["100.64.0.1"]},
        }
    )
    assert agent.health_status is HealthStatus.HEALTHY
    assert agent.tailscale is not None
    assert agent.tailscale.ips == ["100.64.0.1"]
    task = MeshTaskStatus.model_validate(
        {
            "phase": "Failed",
            "attempt": 2,
            "attempts": [
                {"agentId": "w1", "outcome": "Unreachable"},
                {"agentId": "w2", "outcome": "TimedOut", "error": "no answer in 300 s"},
            ],
            "result": None,
        }
    )
    assert task.phase is TaskPhase.FAILED
    outcomes = [a.outcome for a in task.attempts]
    assert outcomes == [AttemptOutcome.UNREACHABLE, AttemptOutcome.TIMED_OUT]
    assert ACLPolicyStatus.model_validate({}).conditions == []


def test_fresh_status_has_zero_counters_and_no_conditions() -> None:
    status = MeshAgentStatus()
    assert (status.active_tasks, status.completed_tasks, status.failed_tasks) == (0, 0, 0)
    assert status.conditions == []
    assert MeshTaskStatus().attempt == 0


def test_enum_values_are_those_of_the_design() -> None:
    assert [p.value for p in Priority] == ["low", "medium", "high", "critical"]
    assert [n.value for n in Network] == ["tailscale", "direct"]
    assert [h.value for h in HealthStatus] == ["pending", "healthy", "degraded", "unreachable"]
    assert [p.value for p in TaskPhase] == [
        "Pending",
        "Assigned",
        "Running",
        "Completed",
        "Failed",
        "TimedOut",
    ]
    assert [a.value for a in Action] == ["read", "write", "execute", "admin", "*"]


# -- conditions and reasons ---------------------------------------------------------------

CAMEL_CASE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
CONDITION_ENUMS: list[type[StrEnum]] = [
    MeshAgentCondition,
    MeshTaskCondition,
    ACLPolicyCondition,
]
REASON_ENUMS: list[type[StrEnum]] = [MeshAgentReason, MeshTaskReason, ACLPolicyReason]


@pytest.mark.parametrize("enum", CONDITION_ENUMS + REASON_ENUMS, ids=lambda e: e.__name__)
def test_condition_types_and_reasons_are_camel_case(enum: type[StrEnum]) -> None:
    assert all(CAMEL_CASE.match(member.value) for member in enum)


@pytest.mark.parametrize("enum", CONDITION_ENUMS, ids=lambda e: e.__name__)
def test_every_kind_has_a_ready_summary_condition(enum: type[StrEnum]) -> None:
    assert READY in {member.value for member in enum}


def test_distinct_stages_have_distinct_conditions() -> None:
    assert {"Assigned", "Running", "Succeeded", "Failed"} <= {c.value for c in MeshTaskCondition}
    assert {c.value for c in MeshAgentCondition} == {
        "Ready",
        "Registered",
        "TailnetConnected",
        "CredentialIssued",
        "EndpointAllowed",
    }
    assert "Accepted" in {c.value for c in ACLPolicyCondition}


# -- payload size -------------------------------------------------------------------------


def test_payload_within_the_limit_has_no_error() -> None:
    assert payload_size_error({"text": "hello"}) is None
    assert payload_size_error(None) is None


def test_payload_exactly_at_the_limit_is_accepted() -> None:
    payload = "x" * (PAYLOAD_MAX_BYTES - 2)  # the JSON string adds two quotes
    assert payload_size_error(payload) is None
    assert payload_size_error(payload + "x") is not None


def test_payload_over_the_limit_names_field_size_and_limit() -> None:
    payload = {"blob": "x" * 300_000}
    size = len(json.dumps(payload, separators=(",", ":")))
    message = payload_size_error(payload)
    assert message is not None
    assert message.startswith(f"spec.payload is {size} bytes")
    assert "the limit is 262144 bytes (256 KiB)" in message


def test_result_size_error_names_the_result_field_and_custom_limit() -> None:
    message = payload_size_error(["a" * 2000], field="status.result", limit=1024)
    assert message is not None
    assert message.startswith("status.result is 2004 bytes")
    assert "the limit is 1024 bytes (1 KiB)" in message


def test_payload_size_counts_compact_utf8_json() -> None:
    # Whitespace a user typed does not count; non-ASCII characters count as their bytes.
    assert payload_size_error({"k": "é" * 10}, limit=len('{"k":""}') + 20) is None
    assert payload_size_error({"k": "é" * 10}, limit=len('{"k":""}') + 19) is not None
