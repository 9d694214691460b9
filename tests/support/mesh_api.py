"""The mesh API of a running operator as an external agent sees it: the agent registered,
its credential exchanged for tokens (its own, and one addressed to another agent), calls
with a token, and the error body of a refusal."""

from __future__ import annotations

from typing import Any

import httpx

from agent_mesh import testing
from agent_mesh.domain.message import Message
from agent_mesh.sdk import TokenSource
from agent_mesh.testing import OperatorProcess
from tests.support.cluster import Cluster


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


def post_token(operator: OperatorProcess, body: dict[str, Any]) -> httpx.Response:
    """POST /v1/token with `body`: any of its grants, as a client sends it."""
    return call(operator, "POST", "/v1/token", None, json=body)


def token_source(
    operator: OperatorProcess, namespace: str, agent_id: str, credential: str, url: str = ""
) -> TokenSource:
    """What an external agent holds: a TokenSource exchanging `credential` with the mesh API
    of `operator` (at `url` when something stands between), trusting its CA bundle."""
    return TokenSource(
        url or operator.mesh_url,
        namespace=namespace,
        agent_id=agent_id,
        credential=credential,
        ca_file=operator.ca_file,
    )


def exchange(
    operator: OperatorProcess, namespace: str, agent_id: str, credential: str
) -> httpx.Response:
    """An external agent's credential for its mesh-API token."""
    return post_token(
        operator, {"namespace": namespace, "agentId": agent_id, "credential": credential}
    )


def exchange_service_account(operator: OperatorProcess, sa_token: str) -> httpx.Response:
    """A pod's ServiceAccount token for the mesh-API token of the agent bound to it."""
    return post_token(operator, {"serviceAccountToken": sa_token})


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
    return post_token(operator, body)


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


def send_message(url: str, token: str, message: Message) -> httpx.Response:
    """POST `message` straight to the agent serving at `url`, with `token` (one addressed
    to that agent), as a caller without the SDK does."""
    return httpx.post(
        f"{url}/v1/messages",
        headers={"Authorization": f"Bearer {token}"},
        json=message.to_wire(),
        timeout=10,
    )


def refusal(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error body of `response`, which must be a refusal with `status`."""
    assert response.status_code == status, response.text
    return error_of(response)


def jwks_kids(operator: OperatorProcess) -> set[str]:
    """The key ids the operator's JWKS lists."""
    keys = call(operator, "GET", "/.well-known/jwks.json", None).json()["keys"]
    return {k["kid"] for k in keys}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]
