"""Helpers for tests that talk to a running operator's mesh API as agents do."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from tests.conftest import Cluster, OperatorProcess, wait_for

GROUP, VERSION = "agentmesh.io", "v1alpha1"


def apply_agent(cluster: Cluster, namespace: str, name: str, agent_type: str, **spec: Any) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MeshAgent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"agentType": agent_type, **spec},
    }
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "meshagents", body)


def external_agent(
    cluster: Cluster, namespace: str, name: str, agent_type: str, **spec: Any
) -> str:
    """An external MeshAgent (spec.endpoint set); returns the credential the operator made."""
    spec.setdefault("endpoint", "http://127.0.0.1:9")
    apply_agent(cluster, namespace, name, agent_type, **spec)
    return credential_of(cluster, namespace, name)


def credential_of(cluster: Cluster, namespace: str, name: str) -> str:
    def secret_name() -> str | None:
        agent = cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "meshagents", name
        )
        return (agent.get("status", {}).get("credential") or {}).get("secretName")

    secret = wait_for(f"status.credential of {name}", secret_name)
    from kubernetes import client

    data = client.CoreV1Api(cluster.api).read_namespaced_secret(secret, namespace).data
    return base64.b64decode(data["credential"]).decode()


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
