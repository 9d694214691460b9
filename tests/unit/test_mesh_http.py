"""The mesh API's HTTP contract on loopback, with the authority's state in memory:
error shapes, body limits, token exchange, identity binding and ACL on routes."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from agent_mesh.api import meshagent
from agent_mesh.auth.authority import ReviewedToken
from agent_mesh.auth.tokens import MeshClaims, TokenVerifier
from agent_mesh.domain.acl import MeshCall, PolicyIndex
from agent_mesh.domain.agents import AgentRecord
from agent_mesh.domain.errors import AuthError
from agent_mesh.domain.health import HealthStatus
from tests.support.memory_mesh import (
    CREDENTIAL,
    MemoryMesh,
    agent_record,
    error_body,
    memory_mesh_fixture,
)


def _team() -> list[AgentRecord]:
    return [
        agent_record("w1", "worker"),
        agent_record("w2", "worker"),
        agent_record("boss", "orchestrator"),
    ]


mesh = memory_mesh_fixture(_team, max_body_bytes=4096, whole_second=False)
"""The mesh API on loopback over the authority's state in memory: two workers and a boss."""


async def test_call_without_a_token_is_refused_with_a_json_error(mesh: MemoryMesh) -> None:
    response = await mesh.client.get("/v1/whoami")
    assert response.status == 401
    assert (await error_body(response))["field"] == "Authorization"


async def test_non_bearer_authorization_is_refused(mesh: MemoryMesh) -> None:
    response = await mesh.client.get("/v1/whoami", headers={"Authorization": "Basic eDp5"})
    assert response.status == 401
    assert (await error_body(response))["code"] == "TokenMalformed"


async def test_garbage_token_is_refused(mesh: MemoryMesh) -> None:
    response = await mesh.client.get("/v1/whoami", headers={"Authorization": "Bearer abc.def"})
    assert response.status == 401


async def test_own_heartbeat_is_accepted_another_agents_is_forbidden(mesh: MemoryMesh) -> None:
    token = await mesh.token("w1")
    headers = {"Authorization": f"Bearer {token}"}
    own = await mesh.client.post("/v1/agents/ns/w1/heartbeat", json={}, headers=headers)
    assert own.status == 200
    other = await mesh.client.post("/v1/agents/ns/w2/heartbeat", json={}, headers=headers)
    assert other.status == 403
    assert (await error_body(other))["code"] == "NotYourAgent"
    denials = mesh.authority.audit.recent(event="acl.decision")
    assert denials and denials[0]["decision"] == "deny"


async def test_heartbeat_with_a_negative_task_count_names_the_field(mesh: MemoryMesh) -> None:
    token = await mesh.token("w1")
    response = await mesh.client.post(
        "/v1/agents/ns/w1/heartbeat",
        json={"activeTasks": -1},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status == 400
    assert (await error_body(response))["field"] == "activeTasks"


async def test_oversized_body_is_413_and_the_server_stays_up(mesh: MemoryMesh) -> None:
    response = await mesh.client.post("/v1/token", data=b"x" * 5000)
    assert response.status == 413
    assert (await error_body(response))["field"] == "body"
    assert (await mesh.client.get("/healthz")).status == 200


async def test_credential_and_service_account_token_together_is_400(mesh: MemoryMesh) -> None:
    response = await mesh.client.post(
        "/v1/token",
        json={"serviceAccountToken": "t", "credential": "c", "namespace": "ns", "agentId": "w1"},
    )
    assert response.status == 400
    assert "exactly one" in (await error_body(response))["message"]


async def test_empty_body_is_400(mesh: MemoryMesh) -> None:
    response = await mesh.client.post("/v1/token")
    assert response.status == 400
    assert (await error_body(response))["field"] == "body"


async def test_unknown_route_is_a_json_404(mesh: MemoryMesh) -> None:
    response = await mesh.client.get("/v1/nothing")
    assert response.status == 404
    assert (await error_body(response))["code"] == "NotFound"


async def test_deleted_agent_token_is_refused(mesh: MemoryMesh) -> None:
    token = await mesh.token("w2")
    mesh.registry.remove("ns", "w2")
    response = await mesh.client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 401
    assert (await error_body(response))["code"] == "AgentUnknown"


async def test_recreated_agent_does_not_accept_the_old_token(mesh: MemoryMesh) -> None:
    token = await mesh.token("w2")
    mesh.registry.upsert(agent_record("w2", "worker", uid="uid-new"))
    response = await mesh.client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    assert (await error_body(response))["code"] == "AgentUnknown"


def _labelled_pod(mesh: MemoryMesh, account: str, pod: str, label: str) -> str:
    """A ServiceAccount token of `account` bound to `pod`, labelled agentmesh.io/agent."""
    token = f"sa-token-{account}-{pod}"
    mesh.reviewer.tokens[token] = ReviewedToken(
        f"system:serviceaccount:ns:{account}",
        {"authentication.kubernetes.io/pod-name": [pod]},
    )
    mesh.reviewer.pod_labels[("ns", pod)] = label
    return token


async def _pod_exchange(mesh: MemoryMesh, account: str, pod: str, label: str) -> Any:
    """POST /v1/token with the token of _labelled_pod(...)."""
    token = _labelled_pod(mesh, account, pod, label)
    return await mesh.client.post("/v1/token", json={"serviceAccountToken": token})


async def test_service_account_token_maps_through_the_pod_label(mesh: MemoryMesh) -> None:
    mesh.registry.upsert(agent_record("w1", "worker", service_account="runner"))  # a user-run pod
    mesh.reviewer.tokens["sa-token"] = ReviewedToken(
        "system:serviceaccount:ns:runner",
        {"authentication.kubernetes.io/pod-name": ["w1-0"]},
    )
    mesh.reviewer.pod_labels[("ns", "w1-0")] = "w1"
    response = await mesh.client.post("/v1/token", json={"serviceAccountToken": "sa-token"})
    assert response.status == 200
    assert (await response.json())["agentId"] == "w1"
    wrong = await mesh.client.post(
        "/v1/token", json={"serviceAccountToken": "sa-token", "agentId": "w2"}
    )
    assert wrong.status == 403
    assert (await error_body(wrong))["field"] == "agentId"


async def test_pod_label_finds_an_agent_the_watch_has_not_delivered_yet(mesh: MemoryMesh) -> None:
    # GitOps applies the MeshAgent and its pod together: the pod may ask before the watch
    late = agent_record("late", "worker", service_account="runner")

    async def apiserver(namespace: str, agent_id: str) -> AgentRecord | None:
        return late if (namespace, agent_id) == ("ns", "late") else None

    mesh.authority._fetch_agent = apiserver
    response = await _pod_exchange(mesh, "runner", "late-0", "late")
    assert response.status == 200, await response.text()
    assert (await response.json())["agentId"] == "late"
    refused = await _pod_exchange(mesh, "runner", "ghost-0", "ghost")
    assert refused.status == 401
    assert (await error_body(refused))["code"] == "AgentUnknown"


async def test_pod_label_cannot_pick_an_agent_running_as_another_service_account(
    mesh: MemoryMesh,
) -> None:
    mesh.registry.upsert(
        agent_record("boss", "orchestrator", service_account="boss-sa", workload=True)
    )
    response = await _pod_exchange(mesh, "runner", "sneaky-0", "boss")
    assert response.status == 403
    error = await error_body(response)
    assert (error["code"], error["field"]) == ("ServiceAccountMismatch", "serviceAccountToken")
    assert "runs as ServiceAccount boss-sa" in error["message"]
    refused = mesh.authority.audit.recent(event="token.refused")[0]
    assert refused["code"] == "ServiceAccountMismatch"


async def test_pod_label_cannot_pick_an_agent_that_declares_no_service_account(
    mesh: MemoryMesh,
) -> None:
    # boss: external, no workload
    response = await _pod_exchange(mesh, "runner", "sneaky-0", "boss")
    assert response.status == 403
    error = await error_body(response)
    assert error["code"] == "ServiceAccountMismatch"
    assert "declares no ServiceAccount (spec.serviceAccountName)" in error["message"]


async def test_pod_label_picks_a_workload_without_service_account_name_by_its_own_account(
    mesh: MemoryMesh,
) -> None:
    # its pod runs as the per-agent ServiceAccount the operator creates, named after it
    manifest = {"metadata": {"name": "w2", "namespace": "ns"}, "spec": {"agentType": "worker"}}
    manifest["spec"]["workload"] = {"spec": {"containers": [{"name": "a", "image": "x:1"}]}}
    mesh.registry.upsert(meshagent.agent_record(manifest))
    response = await _pod_exchange(mesh, "w2", "w2-0", "w2")
    assert response.status == 200, await response.text()
    assert (await response.json())["agentId"] == "w2"
    refused = await _pod_exchange(mesh, "runner", "w2-1", "w2")
    assert refused.status == 403


async def test_the_operators_subject_gets_no_token_even_from_an_old_meshagent(
    mesh: MemoryMesh,
) -> None:
    # a MeshAgent created before the CRD reserved the name: the exchange still refuses it
    mesh.registry.upsert(agent_record("agent-mesh-operator", "orchestrator"))
    response = await mesh.client.post(
        "/v1/token",
        json={"namespace": "ns", "agentId": "agent-mesh-operator", "credential": CREDENTIAL},
    )
    assert response.status == 403
    error = await error_body(response)
    assert (error["code"], error["field"]) == ("ReservedAgentId", "agentId")
    assert mesh.authority.audit.recent(event="token.refused")[0]["code"] == "ReservedAgentId"


async def test_expired_token_is_refused(mesh: MemoryMesh) -> None:
    token = await mesh.token("w1")
    mesh.clock.advance(3600 + 31)
    response = await mesh.client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 401
    assert (await error_body(response))["code"] == "TokenExpired"


async def test_revocation_in_the_future_is_rejected(mesh: MemoryMesh) -> None:
    boss = await mesh.token("boss")
    later = (mesh.clock.now() + dt.timedelta(hours=1)).isoformat()
    response = await mesh.client.post(
        "/v1/revocations",
        json={"agent": {"namespace": "ns", "agentId": "w1"}, "before": later},
        headers={"Authorization": f"Bearer {boss}"},
    )
    assert response.status == 400
    assert (await error_body(response))["field"] == "before"


async def test_revoked_agent_loses_access_and_metrics_count_it(mesh: MemoryMesh) -> None:
    boss = await mesh.token("boss")
    worker = await mesh.token("w1")
    response = await mesh.client.post(
        "/v1/revocations",
        json={"agent": {"namespace": "ns", "agentId": "w1"}},
        headers={"Authorization": f"Bearer {boss}"},
    )
    assert response.status == 200
    refused = await mesh.client.get("/v1/whoami", headers={"Authorization": f"Bearer {worker}"})
    assert (await error_body(refused))["code"] == "TokenRevoked"
    metrics = await (await mesh.client.get("/metrics")).text()
    assert 'agentmesh_auth_tokens_verified_total{result="TokenRevoked"}' in metrics
    assert "agentmesh_auth_tokens_issued_total" in metrics


async def test_heartbeat_makes_the_agent_healthy_and_discoverable(mesh: MemoryMesh) -> None:
    # the agent runs in pod w1-0 (10.1.2.3) and reports its own address as its endpoint
    mesh.registry.upsert(agent_record("w1", "worker", service_account="runner"))
    mesh.reviewer.tokens["sa-token"] = ReviewedToken(
        "system:serviceaccount:ns:runner",
        {"authentication.kubernetes.io/pod-name": ["w1-0"]},
    )
    mesh.reviewer.pod_labels[("ns", "w1-0")] = "w1"
    mesh.reviewer.pod_ips[("ns", "w1-0")] = "10.1.2.3"
    exchanged = await mesh.client.post("/v1/token", json={"serviceAccountToken": "sa-token"})
    headers = {"Authorization": f"Bearer {(await exchanged.json())['token']}"}
    beat = await mesh.client.post(
        "/v1/agents/ns/w1/heartbeat",
        json={"activeTasks": 3, "endpoint": "http://10.1.2.3:7001"},
        headers=headers,
    )
    assert await beat.json() == {"accepted": True}
    assert beat.status == 200
    state = mesh.monitor.tracker.get(("ns", "w1"))
    assert state is not None and state.health is HealthStatus.HEALTHY
    boss = {"Authorization": f"Bearer {await mesh.token('boss')}"}
    found = await mesh.client.get(
        "/v1/agents", params={"capability": "summarize", "health": "healthy"}, headers=boss
    )
    assert found.status == 200
    (item,) = (await found.json())["items"]
    assert (item["agentId"], item["activeTasks"], item["endpoint"]) == (
        "w1",
        3,
        "http://10.1.2.3:7001",
    )


async def test_discovery_needs_read_agents_in_the_target_namespace(mesh: MemoryMesh) -> None:
    worker = {"Authorization": f"Bearer {await mesh.token('w1')}"}
    assert (await mesh.client.get("/v1/agents", headers=worker)).status == 403  # no read agents
    headers = {"Authorization": f"Bearer {await mesh.token('boss')}"}
    elsewhere = await mesh.client.get("/v1/agents", params={"namespace": "other"}, headers=headers)
    assert elsewhere.status == 403
    bad = await mesh.client.get("/v1/agents", params={"health": "great"}, headers=headers)
    assert bad.status == 400
    assert (await error_body(bad))["field"] == "health"
    bad_cap = await mesh.client.get("/v1/agents", params={"capability": "A B"}, headers=headers)
    assert (await error_body(bad_cap))["field"] == "capability"
    bad_limit = await mesh.client.get("/v1/agents", params={"limit": "0"}, headers=headers)
    assert (await error_body(bad_limit))["field"] == "limit"


async def test_heartbeat_with_a_bad_endpoint_names_the_field(mesh: MemoryMesh) -> None:
    token = await mesh.token("w1")
    response = await mesh.client.post(
        "/v1/agents/ns/w1/heartbeat",
        json={"endpoint": "ftp://x"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status == 400
    assert (await error_body(response))["field"] == "endpoint"


# --- feeds for agents: policies in force, revocations; one agent by id ----------------------


async def test_agents_read_their_namespaces_policies_in_force(mesh: MemoryMesh) -> None:
    from agent_mesh.domain.acl import policy_from_spec

    spec = {"agentType": "scout", "allowedActions": ["execute"], "allowedResources": ["agents"]}
    mesh.authority.policies.upsert(
        "ns", "scout", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), policy_from_spec("ns", "scout", spec)
    )
    headers = {"Authorization": f"Bearer {await mesh.token('w1')}"}
    response = await mesh.client.get("/v1/acl/ns", headers=headers)
    assert response.status == 200
    (policy,) = (await response.json())["policies"]
    assert policy["name"] == "scout"
    assert policy_from_spec("ns", "scout", policy["spec"]) == policy_from_spec("ns", "scout", spec)
    other = await mesh.client.get("/v1/acl/elsewhere", headers=headers)
    assert other.status == 403  # a worker may not read another namespace's ACL


async def test_agents_read_the_revocation_list(mesh: MemoryMesh) -> None:
    await mesh.authority.revoke_token("some-jti", actor="test", namespace="ns")
    headers = {"Authorization": f"Bearer {await mesh.token('w1')}"}
    response = await mesh.client.get("/v1/revocations", headers=headers)
    assert response.status == 200
    assert "some-jti" in (await response.json())["tokens"]
    assert (await mesh.client.get("/v1/revocations")).status == 401


# --- consent across namespaces; revocations and audit scoped to namespaces ------------------

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _policy(mesh: MemoryMesh, namespace: str, name: str, **spec: Any) -> None:
    from agent_mesh.domain.acl import policy_from_spec

    mesh.authority.policies.upsert(namespace, name, T0, policy_from_spec(namespace, name, spec))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _visitor(
    mesh: MemoryMesh, agent_id: str = "visitor", agent_type: str = "orchestrator"
) -> str:
    """A token of an agent in namespace `other` whose policy reaches every namespace."""
    mesh.registry.upsert(agent_record(agent_id, agent_type, namespace="other"))
    _policy(
        mesh,
        "other",
        agent_type,
        agentType=agent_type,
        allowedActions=["*"],
        allowedResources=["*"],
        namespaces=["*"],
    )
    return await mesh.token(agent_id, namespace="other")


def _admit_other(mesh: MemoryMesh, **rule: list[str]) -> None:
    """ns admits orchestrators of `other` (the rule's fields may be overridden)."""
    admit = {"namespace": "other", "agentTypes": ["orchestrator"], "actions": ["*"]}
    _policy(
        mesh,
        "ns",
        "gate",
        agentType="gatekeeper",
        admit=[{**admit, "resources": ["*"], **rule}],
    )


async def test_reach_alone_does_not_let_another_namespace_read_audit_or_revoke(
    mesh: MemoryMesh,
) -> None:
    visitor = _bearer(await _visitor(mesh))
    audit = await mesh.client.get("/v1/audit", params={"namespace": "ns"}, headers=visitor)
    assert audit.status == 403
    assert "namespace ns has not consented" in (await error_body(audit))["message"]
    revoke = await mesh.client.post(
        "/v1/revocations",
        json={"agent": {"namespace": "ns", "agentId": "agent-mesh-operator"}},
        headers=visitor,
    )
    assert revoke.status == 403
    jti = await mesh.client.post(
        "/v1/revocations", json={"jti": "j1", "namespace": "ns"}, headers=visitor
    )
    assert jti.status == 403
    assert len(mesh.authority.revocations) == 0


async def test_consent_lets_another_namespace_in_for_what_it_names(mesh: MemoryMesh) -> None:
    visitor = _bearer(await _visitor(mesh))
    _admit_other(mesh, actions=["read"], resources=["audit"])
    audit = await mesh.client.get("/v1/audit", params={"namespace": "ns"}, headers=visitor)
    assert audit.status == 200
    revoke = await mesh.client.post(
        "/v1/revocations", json={"jti": "j1", "namespace": "ns"}, headers=visitor
    )
    assert revoke.status == 403  # admitted to read audit, not to administer tokens


async def test_a_jti_is_revoked_in_the_callers_namespace_by_default(mesh: MemoryMesh) -> None:
    boss = _bearer(await mesh.token("boss"))
    response = await mesh.client.post("/v1/revocations", json={"jti": "j1"}, headers=boss)
    assert response.status == 200
    assert await response.json() == {"revoked": {"jti": "j1", "namespace": "ns"}}
    elsewhere = await mesh.client.post(
        "/v1/revocations", json={"jti": "j2", "namespace": "other"}, headers=boss
    )
    assert elsewhere.status == 403
    assert (await error_body(elsewhere))["code"] == "AccessDenied"


async def test_a_namespace_beside_an_agent_revocation_is_refused(mesh: MemoryMesh) -> None:
    boss = _bearer(await mesh.token("boss"))
    response = await mesh.client.post(
        "/v1/revocations",
        json={"agent": {"namespace": "ns", "agentId": "w1"}, "namespace": "other"},
        headers=boss,
    )
    assert response.status == 400
    assert "namespace applies only to a jti revocation" in (await error_body(response))["message"]


async def test_revoking_a_jti_in_one_namespace_leaves_another_namespaces_token(
    mesh: MemoryMesh,
) -> None:
    visitor_token = await _visitor(mesh)
    jti = (await (await mesh.client.get("/v1/whoami", headers=_bearer(visitor_token))).json())[
        "jti"
    ]
    boss = _bearer(await mesh.token("boss"))
    response = await mesh.client.post("/v1/revocations", json={"jti": jti}, headers=boss)
    assert response.status == 200  # ns's entry: refuses that jti only on a token of ns
    still = await mesh.client.get("/v1/whoami", headers=_bearer(visitor_token))
    assert still.status == 200


async def test_agents_see_revocations_of_their_namespace_and_those_it_admits(
    mesh: MemoryMesh,
) -> None:
    await mesh.authority.revoke_token("in-ns", actor="test", namespace="ns")
    await mesh.authority.revoke_token("in-other", actor="test", namespace="other")
    await mesh.authority.revoke_token("in-third", actor="test", namespace="third")
    await mesh.authority.revoke_agent("third", "someone", actor="test")
    worker = _bearer(await mesh.token("w1"))
    answer = await (await mesh.client.get("/v1/revocations", headers=worker)).json()
    assert answer["namespaces"] == ["ns"]
    assert set(answer["tokens"]) == {"in-ns"}
    assert answer["agents"] == []
    _admit_other(mesh)
    answer = await (await mesh.client.get("/v1/revocations", headers=worker)).json()
    assert answer["namespaces"] == ["ns", "other"]
    assert set(answer["tokensByNamespace"]) == {"ns", "other"}
    assert set(answer["tokens"]) == {"in-ns", "in-other"}


async def test_an_agents_policy_feed_carries_the_callers_side_of_what_it_admits(
    mesh: MemoryMesh,
) -> None:
    await _visitor(mesh)
    worker = _bearer(await mesh.token("w1"))
    answer = await (await mesh.client.get("/v1/acl/ns", headers=worker)).json()
    assert answer["admitted"] == []
    _admit_other(mesh)
    answer = await (await mesh.client.get("/v1/acl/ns", headers=worker)).json()
    (admitted,) = answer["admitted"]
    assert (admitted["namespace"], admitted["name"]) == ("other", "orchestrator")
    assert admitted["spec"]["namespaces"] == ["*"]
    assert "admit" not in admitted["spec"]  # whom `other` admits is not ns's business
    (gate,) = answer["policies"]
    assert gate["spec"]["admit"][0]["namespace"] == "other"


async def test_audit_of_a_namespace_shows_calls_into_it_from_elsewhere(mesh: MemoryMesh) -> None:
    visitor = _bearer(await _visitor(mesh))
    assert (
        await mesh.client.get("/v1/agents", headers=visitor, params={"namespace": "ns"})
    ).status == 403
    mesh.registry.upsert(agent_record("gov", "governor"))
    governor = _bearer(await mesh.token("gov"))
    answer = await mesh.client.get("/v1/audit", params={"event": "acl.decision"}, headers=governor)
    records = (await answer.json())["items"]
    assert any(
        r["namespace"] == "other" and r["targetNamespace"] == "ns" and r["decision"] == "deny"
        for r in records
    )


async def test_an_agents_gate_enforces_consent_from_its_policy_feed(mesh: MemoryMesh) -> None:
    """The Gate of an agent in ns decides on a caller from `other` as the operator does:
    reach alone is refused, reach with ns's consent is allowed, after its next sync."""
    from agent_mesh.domain.errors import ForbiddenError
    from agent_mesh.sdk.gate import Gate
    from agent_mesh.sdk.identity import TokenSource

    caller = mesh.authority.verifier.verify(await _visitor(mesh))
    tokens = TokenSource(
        str(mesh.client.make_url("")), namespace="ns", agent_id="w1", credential=CREDENTIAL
    )
    gate = Gate(tokens)
    await gate.sync()
    with pytest.raises(ForbiddenError, match="namespace ns has not consented"):
        gate.authorize(caller, MeshCall.SUBMIT_TASK)
    _admit_other(mesh, actions=["execute"], resources=["tasks"])
    await gate.sync()
    gate.authorize(caller, MeshCall.SUBMIT_TASK)
    with pytest.raises(ForbiddenError, match="has not consented"):
        gate.authorize(caller, MeshCall.MESSAGE_AGENT)  # execute agents was not admitted


async def test_audit_for_a_bad_namespace_names_the_field(mesh: MemoryMesh) -> None:
    mesh.registry.upsert(agent_record("gov", "governor"))
    governor = _bearer(await mesh.token("gov"))
    response = await mesh.client.get("/v1/audit", params={"namespace": "A B"}, headers=governor)
    assert response.status == 400
    assert (await error_body(response))["field"] == "namespace"


async def test_one_agent_by_id_needs_read_agents(mesh: MemoryMesh) -> None:
    boss = {"Authorization": f"Bearer {await mesh.token('boss')}"}
    found = await mesh.client.get("/v1/agents/ns/w2", headers=boss)
    assert found.status == 200
    assert (await found.json())["agentId"] == "w2"
    missing = await mesh.client.get("/v1/agents/ns/nobody", headers=boss)
    assert missing.status == 404
    assert (await error_body(missing))["field"] == "agentId"
    worker = {"Authorization": f"Bearer {await mesh.token('w1')}"}
    assert (await mesh.client.get("/v1/agents/ns/w2", headers=worker)).status == 403


# --- the operator's own identity --------------------------------------------------------


def _claims_at(mesh: MemoryMesh, token: str, audience: str) -> MeshClaims:
    """The claims of `token` as agent `audience` verifies it."""
    verifier = TokenVerifier(
        mesh.authority.keyring, mesh.clock, mesh.authority.revocations, audience=audience
    )
    return verifier.verify(token)


async def test_operator_tokens_are_bound_to_one_agent_and_refused_by_the_mesh_api(
    mesh: MemoryMesh,
) -> None:
    token = mesh.authority.operator_token("ns", "w1", 330)
    claims = _claims_at(mesh, token, "ns/w1")
    assert (claims.sub, claims.agent_type, claims.namespace, claims.aud) == (
        "agent-mesh-operator",
        "mesh-operator",
        "ns",
        "ns/w1",
    )
    assert claims.exp - claims.iat == 330
    with pytest.raises(AuthError) as elsewhere:
        _claims_at(mesh, token, "ns/w2")
    assert elsewhere.value.code == "WrongAudience"
    response = await mesh.client.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 401
    assert (await error_body(response))["code"] == "WrongAudience"


async def test_operator_tokens_are_reused_per_agent_while_they_cover_the_need(
    mesh: MemoryMesh,
) -> None:
    first = mesh.authority.operator_token("ns", "w1", 330)
    assert mesh.authority.operator_token("ns", "w1", 330) == first
    assert mesh.authority.operator_token("ns", "w2", 330) != first
    assert mesh.authority.operator_token("other", "w1", 330) != first
    mesh.clock.advance(300)  # 30 s left: still more than the 15 s floor
    assert mesh.authority.operator_token("ns", "w1", 330) == first
    mesh.clock.advance(20)  # 10 s left: renewed
    assert mesh.authority.operator_token("ns", "w1", 330) != first


async def test_an_operator_token_never_outlives_what_the_call_asked_for(mesh: MemoryMesh) -> None:
    long = mesh.authority.operator_token("ns", "w1", 330)
    short = mesh.authority.operator_token("ns", "w1", 40)  # a 30 s task: not the 330 s token
    assert short != long
    assert _claims_at(mesh, short, "ns/w1").exp - mesh.clock.now().timestamp() <= 40
    # both kinds stay cached: alternating needs do not sign every time
    assert mesh.authority.operator_token("ns", "w1", 330) == long
    assert mesh.authority.operator_token("ns", "w1", 40) == short
    capped = mesh.authority.operator_token("ns", "w2", 10 * 86400)
    lifetime = mesh.authority.settings.token_lifetime.total_seconds()
    claims = _claims_at(mesh, capped, "ns/w2")
    assert claims.exp - claims.iat == lifetime  # at most the mesh token lifetime


def test_the_operators_type_may_dispatch_and_send_events_but_nothing_else() -> None:
    from agent_mesh.domain.acl import Action

    index = PolicyIndex()
    allowed = {
        (action, resource)
        for action in (Action.READ, Action.WRITE, Action.EXECUTE, Action.ADMIN)
        for resource in ("tasks", "events", "agents", "acl", "audit", "tokens")
        if index.decide("mesh-operator", "ns", action, resource).allowed
    }
    assert (Action.EXECUTE, "tasks") in allowed
    assert (Action.WRITE, "events") in allowed
    assert not {a for a, r in allowed if a is Action.ADMIN}
    assert not {r for _, r in allowed if r in ("acl", "audit", "tokens")}
    # its tokens name the recipient's namespace, and reach no other
    assert not index.decide("mesh-operator", "ns", Action.EXECUTE, "tasks", "other").allowed
