"""Fault: the operator killed with SIGKILL (no shutdown code runs). A new operator
continues from what the first left in the cluster: its signing keys and revocations,
the agents' health (aged from the lastSeen in status), the mesh CA (reused, not
replaced)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from agent_mesh.pki import CA_SECRET
from tests.support.cluster import Cluster
from tests.support.mesh_api import call, error_of, jwks_kids, token_of
from tests.support.namespaces import namespace_fixture
from tests.support.operators import KEYS_FAMILY, keys_operator, own_operator
from tests.support.waiting import wait_for

pytestmark = pytest.mark.fault_operator_killed

own_namespace = namespace_fixture(KEYS_FAMILY)
system_namespace = namespace_fixture(f"{KEYS_FAMILY}sys-")
"""A fresh operator namespace: no CA Secret in it yet."""


def ca_secret(cluster: Cluster, namespace: str) -> client.V1Secret:
    return client.CoreV1Api(cluster.api).read_namespaced_secret(CA_SECRET, namespace)


def test_keys_and_revocations_survive_an_operator_restart(
    cluster: Cluster, crds: object, own_namespace: str, system_namespace: str, tmp_path: Path
) -> None:
    system = system_namespace
    # killed: no graceful shutdown, state must already be in the cluster
    with keys_operator(cluster, tmp_path / "first.log", system, killed=True) as operator:
        kept = token_of(cluster, operator, own_namespace, "keeper", "worker")
        revoked = token_of(cluster, operator, own_namespace, "loser", "worker")
        admin = token_of(cluster, operator, own_namespace, "boss", "orchestrator")
        jti = call(operator, "GET", "/v1/whoami", revoked).json()["jti"]
        assert call(operator, "POST", "/v1/revocations", admin, json={"jti": jti}).is_success
        kids_before = jwks_kids(operator)

    with keys_operator(cluster, tmp_path / "second.log", system) as restarted:
        assert jwks_kids(restarted) == kids_before
        assert call(restarted, "GET", "/v1/whoami", kept).status_code == 200
        refused = call(restarted, "GET", "/v1/whoami", revoked)
        assert refused.status_code == 401
        assert error_of(refused)["code"] == "TokenRevoked"


def test_health_continues_from_status_after_a_restart(
    cluster: Cluster, crds: object, own_namespace: str, system_namespace: str, tmp_path: Path
) -> None:
    system = system_namespace
    # degraded 5 s after the last beat, unreachable only after 10 min: however long the
    # restart takes on a loaded machine, the agent is still degraded when the new operator
    # looks (no window to hit)
    health_env = {
        "AGENT_MESH_HEALTH_DEGRADED_SECONDS": "5",
        "AGENT_MESH_HEALTH_UNREACHABLE_SECONDS": "600",
        "AGENT_MESH_HEALTH_SWEEP_SECONDS": "0.25",
    }

    def status() -> dict[str, Any]:
        obj = cluster.custom.get_namespaced_custom_object(
            "agentmesh.io", "v1alpha1", own_namespace, "meshagents", "steady"
        )
        return dict(obj.get("status") or {})

    def events(reason: str) -> list[str]:
        items = client.CoreV1Api(cluster.api).list_namespaced_event(own_namespace).items
        return [
            e.message for e in items if e.involved_object.name == "steady" and e.reason == reason
        ]

    with own_operator(
        cluster,
        tmp_path / "first.log",
        KEYS_FAMILY,
        system=system,
        extra_env=health_env,
        killed=True,
    ) as operator:
        token = token_of(cluster, operator, own_namespace, "steady", "worker")
        beat = f"/v1/agents/{own_namespace}/steady/heartbeat"
        assert call(operator, "POST", beat, token, json={}).status_code == 200
        seen = wait_for("healthy", lambda: status().get("healthStatus") == "healthy" and status())
    with own_operator(
        cluster, tmp_path / "second.log", KEYS_FAMILY, system=system, extra_env=health_env
    ) as restarted:
        # no heartbeat since: the restarted operator ages the lastSeen it read from status
        wait_for("degraded after the restart", lambda: status().get("healthStatus") == "degraded")
        assert status()["lastSeen"] == seen["lastSeen"]  # aged, not reset to the restart
        degraded = wait_for("the restart's AgentDegraded Event", lambda: events("AgentDegraded"))
        assert f"was healthy; last seen {seen['lastSeen']}" in degraded[0]
        assert call(restarted, "POST", beat, token, json={}).status_code == 200
        wait_for("healthy again", lambda: status().get("healthStatus") == "healthy")


def test_ca_secret_is_created_once_and_reused_across_operator_restarts(
    cluster: Cluster, crds: object, system_namespace: str, tmp_path: Path
) -> None:
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    # killed: no goodbye, the CA must already be in the cluster
    with own_operator(
        cluster, first_log, KEYS_FAMILY, system=system_namespace, killed=True
    ) as first:
        created = ca_secret(cluster, system_namespace)
        assert created.metadata.labels["app.kubernetes.io/managed-by"] == "agent-mesh"
        assert first.ca_file is not None
        published = first.ca_file.read_bytes()
        assert base64.b64decode(created.data["ca.crt"]) == published

    with own_operator(cluster, second_log, KEYS_FAMILY, system=system_namespace) as second:
        kept = ca_secret(cluster, system_namespace)
        assert kept.metadata.uid == created.metadata.uid
        assert kept.metadata.resource_version == created.metadata.resource_version  # unwritten
        assert second.ca_file is not None and second.ca_file.read_bytes() == published
        # a client holding the first operator's bundle trusts the restarted one
        answer = httpx.get(f"{second.mesh_url}/readyz", verify=first.tls, timeout=10)
        assert answer.status_code == 200
