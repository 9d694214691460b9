"""Helpers for tests that talk to a running operator's mesh API as agents do."""

from __future__ import annotations

from typing import Any

import httpx

from agent_mesh import testing
from tests.conftest import Cluster, OperatorProcess

GROUP, VERSION = "agentmesh.io", "v1alpha1"


def apply_agent(cluster: Cluster, namespace: str, name: str, agent_type: str, **spec: Any) -> None:
    cluster.write_meshagent(testing.meshagent_manifest(namespace, name, agent_type, **spec))


def external_agent(
    cluster: Cluster, namespace: str, name: str, agent_type: str, **spec: Any
) -> str:
    """An external MeshAgent (spec.endpoint set); returns the credential the operator made."""
    endpoint = spec.pop("endpoint", "http://127.0.0.1:9")
    return testing.register_external_agent(
        cluster, namespace, name, agent_type, endpoint=endpoint, **spec
    ).credential


def credential_of(cluster: Cluster, namespace: str, name: str) -> str:
    return testing.credential_of(cluster, namespace, name)


def exchange(
    operator: OperatorProcess, namespace: str, agent_id: str, credential: str
) -> httpx.Response:
    return httpx.post(
        f"{operator.mesh_url}/v1/token",
        json={"namespace": namespace, "agentId": agent_id, "credential": credential},
        timeout=10,
        verify=operator.tls,
    )


def token_of(
    cluster: Cluster,
    operator: OperatorProcess,
    namespace: str,
    name: str,
    agent_type: str,
    **spec: Any,
) -> str:
    """A fresh external agent of `agent_type` and a mesh token for it."""
    credential = external_agent(cluster, namespace, name, agent_type, **spec)
    response = exchange(operator, namespace, name, credential)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def exchange_for(operator: OperatorProcess, token: str, *audiences: str) -> httpx.Response:
    """Token exchange: `token` (a mesh-API token) for tokens addressed to `audiences`
    (`<namespace>/<agentId>`; one gives the single answer, several the batch)."""
    body: dict[str, Any] = {
        "grantType": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subjectToken": token,
    }
    if len(audiences) == 1:
        body["audience"] = audiences[0]
    else:
        body["audiences"] = list(audiences)
    return httpx.post(f"{operator.mesh_url}/v1/token", json=body, timeout=10, verify=operator.tls)


def token_for_agent(operator: OperatorProcess, token: str, namespace: str, agent_id: str) -> str:
    """What a caller sends to agent `namespace/agent_id`: a token addressed to it alone,
    exchanged for the caller's mesh-API `token` (as MeshClient does)."""
    response = exchange_for(operator, token, f"{namespace}/{agent_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["accessToken"])


def call(
    operator: OperatorProcess, method: str, path: str, token: str | None, **kwargs: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(
        method,
        f"{operator.mesh_url}{path}",
        headers=headers,
        timeout=10,
        verify=operator.tls,
        **kwargs,
    )


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]
