"""The MeshAgent validating webhook, served by the operator and called by the real
apiserver, refuses a tailscale agent whose MagicDNS host name another agent already has
(`<ns>-a`+`b-c` and `<ns>-a-b`+`c`) or that exceeds a DNS label, with the reason."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.testing import OperatorProcess
from tests.support.cluster import Cluster
from tests.support.mesh_api import apply_agent
from tests.support.namespaces import TEST_NAMESPACE_PREFIX, temporary_namespace
from tests.support.waiting import wait_for

pytestmark = pytest.mark.tailscale


def _registered(cluster: Cluster, namespace: str, name: str) -> bool:
    agent: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshagents", name
    )
    return bool((agent.get("status") or {}).get("registeredAt"))


def _refusal(error: client.ApiException) -> str:
    assert error.status in (400, 422), error.body
    return str(json.loads(error.body)["message"])


def test_colliding_tailnet_hostname_is_refused_at_admission(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    base = f"{TEST_NAMESPACE_PREFIX}{uuid.uuid4().hex[:4]}-a"
    with (
        temporary_namespace(cluster, base) as first,
        temporary_namespace(cluster, f"{base}-b") as second,
    ):
        apply_agent(cluster, first, "b-c", "worker", network="tailscale")
        wait_for("the first agent registered", lambda: _registered(cluster, first, "b-c"))
        with pytest.raises(client.ApiException) as refused:
            apply_agent(cluster, second, "c", "worker", network="tailscale")
        assert (
            f"the agent's MagicDNS host name agent-mesh-{second}-c is already the host name "
            f"of agent b-c in namespace {first}"
        ) in _refusal(refused.value)
        apply_agent(cluster, second, "c", "worker", network="direct")  # not on the tailnet: fine


def test_tailnet_hostname_over_a_dns_label_is_refused_at_admission(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    room = 63 - len("agent-mesh-") - len(namespace) - 1
    with pytest.raises(client.ApiException) as refused:
        apply_agent(cluster, namespace, "w" * (room + 1), "worker", network="tailscale")
    assert f"spec.agentId (or metadata.name) may have at most {room} characters" in _refusal(
        refused.value
    )
    apply_agent(cluster, namespace, "w" * room, "worker", network="tailscale")
