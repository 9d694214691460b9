"""Fault: the operator killed with SIGKILL (no shutdown code runs). A new operator
continues from what the first left in the cluster: its signing keys and revocations,
the agents' health (aged from the lastSeen in status), the mesh CA (reused, not
replaced)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from agent_mesh.pki import CA_SECRET
from tests.conftest import (
    SESSION,
    Cluster,
    OperatorProcess,
    start_operator,
    stop_operator,
    temporary_namespace,
    wait_for,
)
from tests.integration.test_mesh_keys_and_restart import PREFIX, jwks_kids, start_own_operator
from tests.meshhelpers import call, error_of, token_of

pytestmark = pytest.mark.fault_operator_killed


@pytest.fixture
def own_namespace(cluster: Cluster) -> Iterator[str]:
    with temporary_namespace(cluster, f"{PREFIX}{uuid.uuid4().hex[:8]}") as name:
        yield name


@pytest.fixture
def system_namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh operator namespace: no CA Secret in it yet."""
    with temporary_namespace(cluster, f"{PREFIX}sys-{uuid.uuid4().hex[:6]}") as name:
        yield name


def ca_secret(cluster: Cluster, namespace: str) -> client.V1Secret:
    return client.CoreV1Api(cluster.api).read_namespaced_secret(CA_SECRET, namespace)


def test_keys_and_revocations_survive_an_operator_restart(
    cluster: Cluster, crds: object, own_namespace: str, tmp_path: Path
) -> None:
    system = f"amk-{SESSION}-sys-{uuid.uuid4().hex[:6]}"
    operator = start_own_operator(cluster, tmp_path / "first.log", system)
    try:
        kept = token_of(cluster, operator, own_namespace, "keeper", "worker")
        revoked = token_of(cluster, operator, own_namespace, "loser", "worker")
        admin = token_of(cluster, operator, own_namespace, "boss", "orchestrator")
        jti = call(operator, "GET", "/v1/whoami", revoked).json()["jti"]
        assert call(operator, "POST", "/v1/revocations", admin, json={"jti": jti}).is_success
        kids_before = jwks_kids(operator)
    finally:
        operator.process.kill()  # no graceful shutdown: state must already be in the cluster
        operator.process.wait()

    restarted = start_own_operator(cluster, tmp_path / "second.log", system)
    try:
        assert jwks_kids(restarted) == kids_before
        assert call(restarted, "GET", "/v1/whoami", kept).status_code == 200
        refused = call(restarted, "GET", "/v1/whoami", revoked)
        assert refused.status_code == 401
        assert error_of(refused)["code"] == "TokenRevoked"
    finally:
        stop_operator(restarted)


def test_health_continues_from_status_after_a_restart(
    cluster: Cluster, crds: object, own_namespace: str, tmp_path: Path
) -> None:
    system = f"amk-{SESSION}-sys-{uuid.uuid4().hex[:6]}"
    # degraded 5 s after the last beat, unreachable only after 10 min: however long the
    # restart takes on a loaded machine, the agent is still degraded when the new operator
    # looks (no window to hit)
    health_env = {
        "AGENT_MESH_HEALTH_DEGRADED_SECONDS": "5",
        "AGENT_MESH_HEALTH_UNREACHABLE_SECONDS": "600",
        "AGENT_MESH_HEALTH_SWEEP_SECONDS": "0.25",
    }

    def start(log: str) -> OperatorProcess:
        return start_operator(
            cluster,
            tmp_path / log,
            "--no-webhooks",
            watch=f"{PREFIX}*",
            operator_namespace=system,
            extra_env=health_env,
        )

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

    operator = start("first.log")
    try:
        token = token_of(cluster, operator, own_namespace, "steady", "worker")
        beat = f"/v1/agents/{own_namespace}/steady/heartbeat"
        assert call(operator, "POST", beat, token, json={}).status_code == 200
        seen = wait_for("healthy", lambda: status().get("healthStatus") == "healthy" and status())
    finally:
        operator.process.kill()
        operator.process.wait()
    restarted = start("second.log")
    try:
        # no heartbeat since: the restarted operator ages the lastSeen it read from status
        wait_for("degraded after the restart", lambda: status().get("healthStatus") == "degraded")
        assert status()["lastSeen"] == seen["lastSeen"]  # aged, not reset to the restart
        degraded = wait_for("the restart's AgentDegraded Event", lambda: events("AgentDegraded"))
        assert f"was healthy; last seen {seen['lastSeen']}" in degraded[0]
        assert call(restarted, "POST", beat, token, json={}).status_code == 200
        wait_for("healthy again", lambda: status().get("healthStatus") == "healthy")
    finally:
        stop_operator(restarted)


def test_ca_secret_is_created_once_and_reused_across_operator_restarts(
    cluster: Cluster, crds: object, system_namespace: str, tmp_path: Path
) -> None:
    first = start_operator(
        cluster,
        tmp_path / "first.log",
        "--no-webhooks",
        watch=f"{PREFIX}*",
        operator_namespace=system_namespace,
    )
    try:
        created = ca_secret(cluster, system_namespace)
        assert created.metadata.labels["app.kubernetes.io/managed-by"] == "agent-mesh"
        assert first.ca_file is not None
        published = first.ca_file.read_bytes()
        assert base64.b64decode(created.data["ca.crt"]) == published
    finally:
        first.process.kill()  # no goodbye: the CA must already be in the cluster
        first.process.wait()

    second = start_operator(
        cluster,
        tmp_path / "second.log",
        "--no-webhooks",
        watch=f"{PREFIX}*",
        operator_namespace=system_namespace,
    )
    try:
        kept = ca_secret(cluster, system_namespace)
        assert kept.metadata.uid == created.metadata.uid
        assert kept.metadata.resource_version == created.metadata.resource_version  # unwritten
        assert second.ca_file is not None and second.ca_file.read_bytes() == published
        # a client holding the first operator's bundle trusts the restarted one
        answer = httpx.get(f"{second.mesh_url}/readyz", verify=first.tls, timeout=10)
        assert answer.status_code == 200
    finally:
        stop_operator(second)
