"""Mesh identity against the real apiserver and a real operator process: token exchange
(credential and TokenReview), identity binding, ACL on mesh calls, revocation, audit."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.testing import OperatorProcess, manifest
from tests.support.cluster import Cluster
from tests.support.mesh_api import (
    apply_agent,
    call,
    error_of,
    exchange,
    exchange_service_account,
    external_agent,
    refusal,
    token_of,
)
from tests.support.operators import log_records
from tests.support.tasks import agent_status
from tests.support.waiting import wait_for


def _heartbeat(operator: OperatorProcess, namespace: str, agent: str, token: str) -> httpx.Response:
    return call(
        operator,
        "POST",
        f"/v1/agents/{namespace}/{agent}/heartbeat",
        token,
        json={"activeTasks": 0},
    )


@pytest.mark.smoke
def test_external_agent_exchanges_its_credential_for_a_token(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    credential = external_agent(cluster, namespace, "critic-1", "critic")
    response = exchange(operator, namespace, "critic-1", credential)
    assert response.status_code == 200, response.text
    issued = response.json()
    assert issued["tokenType"] == "Bearer"
    assert issued["agentType"] == "critic"
    me = call(operator, "GET", "/v1/whoami", issued["token"])
    assert me.status_code == 200
    assert me.json()["sub"] == "critic-1"
    assert me.json()["namespace"] == namespace
    # status keeps only the hash of the credential
    agent = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshagents", "critic-1"
    )
    assert credential not in json.dumps(agent)


def test_a_wrong_credential_gets_no_token(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    external_agent(cluster, namespace, "critic-2", "critic")
    response = exchange(operator, namespace, "critic-2", "not-the-credential")
    assert response.status_code == 401
    assert error_of(response)["code"] == "CredentialInvalid"
    unknown = exchange(operator, namespace, "nobody", "whatever")
    assert unknown.status_code == 401
    assert error_of(unknown)["code"] == "CredentialInvalid"  # no probing for agent names


def _service_account_pod(
    cluster: Cluster, namespace: str, account: str, pod: str, agent_label: str | None
) -> dict[str, str]:
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
    labels = {"agentmesh.io/agent": agent_label} if agent_label else {}
    created = core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": pod, "labels": labels},
            "spec": {
                "serviceAccountName": account,
                "automountServiceAccountToken": False,
                "containers": [{"name": "agent", "image": "agent:latest"}],
            },
        },
    )
    return {"name": pod, "uid": created.metadata.uid}


def _pod_token(
    cluster: Cluster, namespace: str, account: str, pod: dict[str, str], audience: str
) -> str:
    request = client.CoreV1Api(cluster.api).create_namespaced_service_account_token(
        account,
        namespace,
        {
            "spec": {
                "audiences": [audience],
                "expirationSeconds": 600,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", **pod},
            }
        },
    )
    return str(request.status.token)


def test_pod_exchanges_its_service_account_token_through_tokenreview(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    # the label picks the agent only because the agent names the pod's ServiceAccount
    apply_agent(
        cluster,
        namespace,
        "worker-pod",
        "worker",
        capabilities=["summarize"],
        serviceAccountName="worker-sa",
    )
    pod = _service_account_pod(cluster, namespace, "worker-sa", "worker-pod-0", "worker-pod")
    sa_token = _pod_token(cluster, namespace, "worker-sa", pod, "agent-mesh")
    response = exchange_service_account(operator, sa_token)
    assert response.status_code == 200, response.text
    claims = call(operator, "GET", "/v1/whoami", response.json()["token"]).json()
    # type and capabilities come from the MeshAgent, not from the request
    assert (claims["sub"], claims["agentType"], claims["capabilities"]) == (
        "worker-pod",
        "worker",
        ["summarize"],
    )


def test_service_account_token_for_another_audience_is_refused(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    apply_agent(cluster, namespace, "worker-aud", "worker")
    pod = _service_account_pod(cluster, namespace, "aud-sa", "worker-aud-0", "worker-aud")
    sa_token = _pod_token(cluster, namespace, "aud-sa", pod, "vault")
    refused = refusal(exchange_service_account(operator, sa_token), 401)
    assert refused["field"] == "serviceAccountToken"


def test_tokenreview_invalid_service_account_token_is_refused(
    operator: OperatorProcess,
) -> None:
    forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6eDp5In0.c2ln"
    refused = refusal(exchange_service_account(operator, forged), 401)
    assert refused["code"] == "TokenReviewFailed"


def test_service_account_not_bound_to_any_agent_gets_no_token(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    pod = _service_account_pod(cluster, namespace, "stray-sa", "stray-0", None)
    sa_token = _pod_token(cluster, namespace, "stray-sa", pod, "agent-mesh")
    refused = refusal(exchange_service_account(operator, sa_token), 403)
    assert refused["code"] == "NotBoundToAgent"


def test_workload_service_account_maps_to_its_agent(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    apply_agent(
        cluster,
        namespace,
        "managed",
        "integrator",
        workload={"spec": {"serviceAccountName": "managed-sa", "containers": []}},
    )
    # The operator maps a ServiceAccount to the MeshAgents it has seen: wait until it has
    # (an agent that asks earlier gets 403 NotBoundToAgent and asks again).
    wait_for(
        "the operator to register MeshAgent managed",
        lambda: agent_status(cluster, namespace, "managed").get("registeredAt"),
    )
    pod = _service_account_pod(cluster, namespace, "managed-sa", "managed-0", None)
    sa_token = _pod_token(cluster, namespace, "managed-sa", pod, "agent-mesh")
    response = exchange_service_account(operator, sa_token)
    assert response.status_code == 200, response.text
    assert response.json()["agentId"] == "managed"


def test_agent_a_token_cannot_heartbeat_for_agent_b_and_is_audited(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    token_a = token_of(cluster, operator, namespace, "agent-a", "worker")
    token_of(cluster, operator, namespace, "agent-b", "worker")
    assert _heartbeat(operator, namespace, "agent-a", token_a).status_code == 200
    denied = _heartbeat(operator, namespace, "agent-b", token_a)
    assert denied.status_code == 403
    assert error_of(denied)["code"] == "NotYourAgent"
    wait_for(
        "an audit line for the denied heartbeat",
        lambda: any(
            line.get("event") == "acl.decision"
            and line.get("decision") == "deny"
            and line.get("resource") == "agents/agent-b"
            for line in _audit_lines(operator)
        ),
    )

    def denial_event() -> bool:
        events = client.CoreV1Api(cluster.api).list_namespaced_event(namespace).items
        return any(
            e.reason == "AccessDenied" and e.involved_object.name == "agent-a" for e in events
        )

    wait_for("an AccessDenied Event on agent-a", denial_event)


def _audit_lines(operator: OperatorProcess) -> list[dict[str, Any]]:
    return [r for r in log_records(operator) if r.get("logger") == "agent_mesh.audit"]


def test_deleted_agent_token_is_refused_even_after_recreation(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    token = token_of(cluster, operator, namespace, "short-lived", "worker")
    assert call(operator, "GET", "/v1/whoami", token).status_code == 200
    cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshagents", "short-lived"
    )
    wait_for(
        "the deleted agent's token to be refused",
        lambda: call(operator, "GET", "/v1/whoami", token).status_code == 401,
    )
    apply_agent(cluster, namespace, "short-lived", "worker", endpoint="http://127.0.0.1:9")
    wait_for(
        "the re-created agent to be registered",
        lambda: agent_status(cluster, namespace, "short-lived").get("credential"),
    )
    refused = call(operator, "GET", "/v1/whoami", token)
    assert refused.status_code == 401
    assert error_of(refused)["code"] in {"AgentUnknown", "TokenRevoked"}


def test_orchestrator_revokes_one_token_and_all_tokens_of_an_agent(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    admin = token_of(cluster, operator, namespace, "orch", "orchestrator")
    worker = token_of(cluster, operator, namespace, "wrk", "worker")
    jti = call(operator, "GET", "/v1/whoami", worker).json()["jti"]
    assert call(operator, "POST", "/v1/revocations", admin, json={"jti": jti}).status_code == 200
    refused = call(operator, "GET", "/v1/whoami", worker)
    assert refused.status_code == 401
    assert error_of(refused)["code"] == "TokenRevoked"

    other = token_of(cluster, operator, namespace, "wrk2", "worker")
    revoked = call(
        operator,
        "POST",
        "/v1/revocations",
        admin,
        json={"agent": {"namespace": namespace, "agentId": "wrk2"}},
    )
    assert revoked.status_code == 200, revoked.text
    assert error_of(call(operator, "GET", "/v1/whoami", other))["code"] == "TokenRevoked"


def test_worker_cannot_revoke_tokens(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    worker = token_of(cluster, operator, namespace, "wrk3", "worker")
    response = call(operator, "POST", "/v1/revocations", worker, json={"jti": "x"})
    assert response.status_code == 403
    assert error_of(response)["code"] == "AccessDenied"


def test_audit_is_readable_by_governor_not_by_worker(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    governor = token_of(cluster, operator, namespace, "gov-a", "governor")
    worker = token_of(cluster, operator, namespace, "wrk-a", "worker")
    assert call(operator, "GET", "/v1/audit", worker).status_code == 403
    listing = call(operator, "GET", "/v1/audit", governor)
    assert listing.status_code == 200
    events = {item["event"] for item in listing.json()["items"]}
    assert "token.issued" in events
    assert "acl.decision" in events
    elsewhere = call(operator, "GET", "/v1/audit", governor, params={"namespace": "kube-system"})
    assert elsewhere.status_code == 403  # the default reaches only its own namespace


def test_custom_type_needs_a_policy_and_policy_status_reports_conflicts(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    researcher = token_of(cluster, operator, namespace, "res", "researcher")
    assert call(operator, "GET", "/v1/audit", researcher).status_code == 403

    def policy(name: str, actions: list[str]) -> dict[str, Any]:
        return manifest(
            "ACLPolicy",
            name,
            {
                "agentType": "researcher",
                "allowedActions": actions,
                "allowedResources": ["audit"],
            },
        )

    cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "aclpolicies", policy("first", ["read"])
    )
    wait_for(
        "the policy to take effect",
        lambda: call(operator, "GET", "/v1/audit", researcher).status_code == 200,
    )
    cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "aclpolicies", policy("second", ["write"])
    )

    def accepted(name: str) -> tuple[str, str] | None:
        obj = cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "aclpolicies", name
        )
        cond = next(
            (c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Accepted"),
            None,
        )
        return (cond["status"], cond["reason"]) if cond else None

    wait_for("second to conflict", lambda: accepted("second") == ("False", "ConflictingPolicy"))
    assert accepted("first") == ("True", "PolicyAccepted")
    cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "aclpolicies", "first"
    )
    wait_for("second to take over", lambda: accepted("second") == ("True", "PolicyAccepted"))
    wait_for(
        "the read permission to go with the first policy",
        lambda: call(operator, "GET", "/v1/audit", researcher).status_code == 403,
    )


def test_oversized_and_malformed_bodies_name_the_field_and_the_server_stays_up(
    operator: OperatorProcess,
) -> None:
    url = f"{operator.mesh_url}/v1/token"
    too_big = httpx.post(
        url, content=b"{" + b" " * (1024 * 1024 + 10) + b"}", timeout=10, verify=operator.tls
    )
    assert too_big.status_code == 413
    assert error_of(too_big)["field"] == "body"

    def chunks() -> Any:
        for _ in range(1100):
            yield b" " * 1024

    streamed = httpx.post(
        url, content=chunks(), timeout=10, verify=operator.tls
    )  # no Content-Length
    assert streamed.status_code == 413
    assert error_of(streamed)["field"] == "body"

    not_json = httpx.post(url, content=b"{nope", timeout=10, verify=operator.tls)
    assert not_json.status_code == 400
    assert error_of(not_json)["field"] == "body"

    wrong_type = httpx.post(
        url,
        json={"namespace": 7, "agentId": "x", "credential": "y"},
        timeout=10,
        verify=operator.tls,
    )
    assert wrong_type.status_code == 400
    assert error_of(wrong_type)["field"] == "namespace"

    unknown_field = httpx.post(
        url, json={"credential": "y", "isAdmin": True}, timeout=10, verify=operator.tls
    )
    assert unknown_field.status_code == 400
    assert error_of(unknown_field)["field"] == "isAdmin"

    assert (
        httpx.get(f"{operator.mesh_url}/healthz", timeout=5, verify=operator.tls).status_code == 200
    )


def test_jwks_serves_public_keys_only(operator: OperatorProcess) -> None:
    keys = httpx.get(
        f"{operator.mesh_url}/.well-known/jwks.json", timeout=5, verify=operator.tls
    ).json()["keys"]
    assert keys
    for key in keys:
        assert "d" not in key
        assert key["use"] == "sig"
