"""A tailscale agent's MagicDNS host name (agent-mesh-<namespace>-<agentId>) is refused at
admission, with the reason, when it is too long, not a DNS label, or another agent's; a
managed agent's name must fit its StatefulSet and Service."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from agent_mesh.api.meshagent import agent_record
from agent_mesh.config import OperatorConfig
from agent_mesh.domain.agents import AgentRegistry
from agent_mesh.domain.errors import ValidationError
from agent_mesh.tailscale.names import check_hostname, hostname, hostname_error
from tests.support.admission import admission_refusal


def _agent(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{namespace}-{name}"},
        "spec": {"agentType": "worker", **spec},
    }


def _memo(*agents: dict[str, Any], **config: Any) -> kopf.Memo:
    registry = AgentRegistry()
    for agent in agents:
        registry.upsert(agent_record(agent))
    return kopf.Memo(config=OperatorConfig(**config), runtime=SimpleNamespace(registry=registry))


def test_hostname_joins_prefix_namespace_and_agent_id() -> None:
    assert hostname("production", "worker-1") == "agent-mesh-production-worker-1"
    assert check_hostname("production", "worker-1") == "agent-mesh-production-worker-1"


def test_hostname_over_63_characters_names_the_room_left_for_the_agent_id() -> None:
    namespace = "n" * 30
    assert hostname_error(namespace, "a" * 21) is None  # 11 + 30 + 1 + 21 = 63
    problem = hostname_error(namespace, "a" * 22)
    assert problem is not None
    assert "has 64 characters, more than the 63 a DNS label allows" in problem
    assert f"in namespace {namespace}, spec.agentId (or metadata.name) may have at most 21" in (
        problem
    )
    with pytest.raises(ValidationError) as raised:
        check_hostname(namespace, "a" * 22)
    assert (raised.value.field, raised.value.code) == ("spec.agentId", "InvalidTailnetHostname")


def test_hostname_that_is_not_a_dns_label_is_refused() -> None:
    problem = hostname_error("ns", "Worker_1")
    assert problem is not None and "is not a DNS label" in problem


def test_tailscale_agent_whose_hostname_another_agent_has_is_refused_at_admission() -> None:
    existing = _agent("a-b", "c", network="tailscale")
    problem = admission_refusal(_agent("a", "b-c", network="tailscale"), _memo(existing))
    assert problem == (
        "the agent's MagicDNS host name agent-mesh-a-b-c is already the host name of agent c "
        "in namespace a-b: two devices cannot share a name; choose another spec.agentId"
    )


def test_collision_is_judged_by_agent_id_not_metadata_name() -> None:
    existing = _agent("a-b", "first", network="tailscale", agentId="c")
    assert admission_refusal(_agent("a", "b-c", network="tailscale"), _memo(existing)) is not None
    renamed = _agent("a", "b-c", network="tailscale", agentId="other")
    assert admission_refusal(renamed, _memo(existing)) is None


def test_updating_an_agent_does_not_collide_with_itself() -> None:
    agent = _agent("a", "b-c", network="tailscale")
    assert admission_refusal(agent, _memo(agent)) is None


def test_direct_agents_neither_collide_nor_need_a_short_hostname() -> None:
    direct = _agent("a-b", "c", network="direct")
    assert admission_refusal(_agent("a", "b-c", network="tailscale"), _memo(direct)) is None
    assert (
        admission_refusal(_agent("a", "b-c"), _memo(_agent("a-b", "c", network="tailscale")))
        is None
    )
    assert admission_refusal(_agent("n" * 40, "a" * 30), _memo()) is None


def test_default_network_tailscale_applies_to_agents_that_name_none() -> None:
    memo = _memo(_agent("a-b", "c"), default_network="tailscale")
    problem = admission_refusal(_agent("a", "b-c"), memo)
    assert problem is not None and "already the host name of agent c" in problem
    too_long = admission_refusal(_agent("n" * 40, "a" * 30), _memo(default_network="tailscale"))
    assert too_long is not None and "more than the 63 a DNS label allows" in too_long


def test_too_long_hostname_is_refused_before_the_operator_has_started() -> None:
    memo = kopf.Memo(config=OperatorConfig())  # no runtime yet: no registry to compare
    problem = admission_refusal(_agent("n" * 40, "a" * 30, network="tailscale"), memo)
    assert problem is not None and "spec.agentId (or metadata.name) may have at most 11" in problem


WORKLOAD = {"spec": {"containers": [{"name": "agent", "image": "agent:1"}]}}


@pytest.mark.parametrize("name", ["1worker", "w" * 53, "dotted.name"])
def test_managed_agent_whose_name_cannot_name_its_statefulset_and_service_is_refused(
    name: str,
) -> None:
    problem = admission_refusal(_agent("ns", name, agentId="w", workload=WORKLOAD), _memo())
    assert problem is not None
    assert problem.startswith(f"metadata.name {name!r}: a MeshAgent with spec.workload")
    assert "at most 52 characters" in problem


def test_managed_agent_with_a_fitting_name_is_admitted() -> None:
    assert admission_refusal(_agent("ns", "w" * 52, workload=WORKLOAD), _memo()) is None
