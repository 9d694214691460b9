"""spec.endpoint against the egress policy where the operator meets it first: the
admission webhook (what needs no DNS), and registration (the name resolved, through a
test resolver: nothing is looked up or dialled) with its EndpointAllowed condition."""

from __future__ import annotations

import datetime as dt
import socket
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from agent_mesh.api.meshagent_status import endpoint_patch
from agent_mesh.config import OperatorConfig
from agent_mesh.controllers.meshagents import endpoint_refusal
from agent_mesh.domain.egress import EgressPolicy
from agent_mesh.transport.egress import EgressGuard
from tests.support.admission import admission_refusal

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def memo(**config: Any) -> kopf.Memo:
    return kopf.Memo(config=OperatorConfig(**config))


def admission_error(endpoint: str, state: kopf.Memo) -> str | None:
    return admission_refusal({"spec": {"agentType": "worker", "endpoint": endpoint}}, state)


def test_spec_endpoint_at_the_metadata_address_is_refused_with_a_clear_message() -> None:
    message = admission_error("http://169.254.169.254/latest/meta-data", memo())
    assert message == (
        "spec.endpoint 'http://169.254.169.254/latest/meta-data' is refused: "
        "169.254.169.254 is a cloud metadata service address; agent endpoints may not be "
        "link-local (cloud metadata), multicast, the Kubernetes Service range or the API "
        "server, nor loopback unless AGENT_MESH_EGRESS_ALLOW_LOOPBACK is set"
    )
    shorthand = admission_error("http://2852039166/", memo())
    assert shorthand is not None and "numeric shorthand for 169.254.169.254" in shorthand


def test_spec_endpoint_on_the_lan_is_admitted_and_the_service_range_is_not() -> None:
    state = memo(egress_service_cidrs=["10.96.0.0/12"])
    assert admission_error("http://192.168.10.20:8080", state) is None
    assert admission_error("https://critic.example.com:8443", state) is None  # names: later
    refused = admission_error("http://10.96.0.10:8080", state)
    assert refused is not None and "Kubernetes Service range" in refused


def test_a_loopback_spec_endpoint_is_admitted_only_when_loopback_is_enabled() -> None:
    assert admission_error("http://127.0.0.1:8080", memo()) is not None
    assert admission_error("http://127.0.0.1:8080", memo(egress_allow_loopback=True)) is None


def test_admission_uses_the_running_operators_policy_with_the_api_server_in_it() -> None:
    state = memo(egress_allow_loopback=True)
    policy = EgressPolicy.from_settings(allow_loopback=True, apiserver=[("127.0.0.1", 6443)])
    state.runtime = SimpleNamespace(egress=EgressGuard(policy))
    refused = admission_error("https://127.0.0.1:6443", state)
    assert refused is not None and "Kubernetes API server" in refused


class OneName(AbstractResolver):
    def __init__(self, name: str, address: str) -> None:
        self.name, self.address = name, address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self.name:
            raise OSError(f"{host} does not resolve")
        return [
            ResolveResult(
                hostname=host, host=self.address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


async def test_a_spec_endpoint_name_resolving_to_metadata_is_refused_at_registration() -> None:
    guard = EgressGuard(EgressPolicy(), OneName("agent.example", "169.254.169.254"))
    runtime: Any = SimpleNamespace(egress=guard)
    refusal = await endpoint_refusal(runtime, "http://agent.example:8080")
    assert refusal is not None
    assert "its host 'agent.example' resolves to 169.254.169.254" in refusal
    assert await endpoint_refusal(runtime, "http://192.168.1.2:8080") is None
    patch: dict[str, Any] = {}
    endpoint_patch({}, patch, refusal, 3, NOW)
    (condition,) = patch["conditions"]
    assert condition["type"] == "EndpointAllowed" and condition["status"] == "False"
    assert condition["reason"] == "EndpointRefused" and condition["message"] == refusal
    assert condition["observedGeneration"] == 3


def test_the_endpoint_condition_is_written_only_when_it_changes() -> None:
    patch: dict[str, Any] = {}
    endpoint_patch({}, patch, None, 1, NOW)
    (allowed,) = patch["conditions"]
    assert (allowed["status"], allowed["reason"]) == ("True", "EndpointAdmitted")
    again: dict[str, Any] = {}
    endpoint_patch({"conditions": patch["conditions"]}, again, None, 1, NOW)
    assert again == {}


@pytest.mark.parametrize("endpoint", ["http://[::ffff:169.254.169.254]/", "http://0xa9fea9fe/"])
def test_spec_endpoint_forms_of_the_metadata_address_are_refused(endpoint: str) -> None:
    message = admission_error(endpoint, memo(egress_allow=["0.0.0.0/0"]))
    assert message is not None and "169.254.169.254" in message
