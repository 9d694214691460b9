"""Rotating an external agent's credential and revoking an agent's tokens by editing its
MeshAgent (as Git does), with no admin token: the real apiserver and the session's
operator; the agent's side is its calls to the mesh API."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest
from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.testing import OperatorProcess, credential_of
from tests.support.cluster import Cluster
from tests.support.mesh_api import call, error_of, exchange, external_agent
from tests.support.waiting import wait_for


def _patch_spec(cluster: Cluster, namespace: str, name: str, **spec: Any) -> None:
    cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshagents", name, {"spec": spec}
    )


def _status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    agent = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshagents", name
    )
    return dict(agent.get("status") or {})


def _token(operator: OperatorProcess, namespace: str, name: str, credential: str) -> str:
    response = exchange(operator, namespace, name, credential)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def _whoami(operator: OperatorProcess, token: str) -> httpx.Response:
    return call(operator, "GET", "/v1/whoami", token)


def _fresh_token_works(
    operator: OperatorProcess, namespace: str, name: str, credential: str
) -> bool:
    """A token exchanged now is accepted: tokens issued in the second of a revocation are
    refused too (iat has one-second precision), so the agent exchanges again, as here."""
    return _whoami(operator, _token(operator, namespace, name, credential)).status_code == 200


def test_a_rotated_credential_replaces_the_old_one_and_its_tokens(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    old = external_agent(cluster, namespace, "ext", "worker", credentialRotation="first")
    assert _status(cluster, namespace, "ext")["credential"]["rotation"] == "first"
    old_token = _token(operator, namespace, "ext", old)
    assert _whoami(operator, old_token).status_code == 200

    _patch_spec(cluster, namespace, "ext", credentialRotation="2026-12-05")
    wait_for(
        "the operator to rotate the credential",
        lambda: _status(cluster, namespace, "ext")["credential"].get("rotation") == "2026-12-05",
    )
    new = credential_of(cluster, namespace, "ext")
    assert new != old
    refused = exchange(operator, namespace, "ext", old)
    assert refused.status_code == 401
    assert error_of(refused)["code"] == "CredentialInvalid"
    revoked = _whoami(operator, old_token)
    assert revoked.status_code == 401, revoked.text
    assert "revoked" in error_of(revoked)["message"]
    wait_for(
        "a token from the new credential to be accepted",
        lambda: _fresh_token_works(operator, namespace, "ext", new),
    )


def test_the_same_rotation_value_again_changes_nothing(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    credential = external_agent(cluster, namespace, "ext", "worker", credentialRotation="v1")
    token = _token(operator, namespace, "ext", credential)
    # Another spec change runs the handlers again; the rotation value is the one handled.
    _patch_spec(cluster, namespace, "ext", capabilities=["summarize"], credentialRotation="v1")
    wait_for(
        "the operator to see the new generation",
        lambda: _status(cluster, namespace, "ext").get("observedGeneration") == 2,
    )
    assert credential_of(cluster, namespace, "ext") == credential
    assert _whoami(operator, token).status_code == 200


def test_revoke_tokens_issued_before_refuses_older_tokens_and_not_newer_ones(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    credential = external_agent(cluster, namespace, "ext", "worker")
    old_token = _token(operator, namespace, "ext", credential)
    assert _whoami(operator, old_token).status_code == 200
    # A minute ahead: counts as the moment the operator applies it, so it does not lock
    # the agent out for a minute.
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _patch_spec(cluster, namespace, "ext", revokeTokensIssuedBefore=ahead)
    wait_for(
        "the operator to apply spec.revokeTokensIssuedBefore",
        lambda: _status(cluster, namespace, "ext").get("tokensRevokedBefore") == ahead,
    )
    refused = _whoami(operator, old_token)
    assert refused.status_code == 401
    assert "revoked" in error_of(refused)["message"]
    wait_for(
        "a token issued after it to be accepted",
        lambda: _fresh_token_works(operator, namespace, "ext", credential),
    )


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        pytest.param(
            "credentialRotation", "1", "needs spec.endpoint", id="rotation-without-endpoint"
        ),
        pytest.param("revokeTokensIssuedBefore", "yesterday", "date-time", id="revoke-not-a-time"),
    ],
)
def test_a_bad_credential_field_is_refused_naming_the_field_and_the_rule(
    cluster: Cluster, crds: Any, namespace: str, field: str, value: str, rule: str
) -> None:
    """spec.credentialRotation needs spec.endpoint; spec.revokeTokensIssuedBefore is a time."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MeshAgent",
        "metadata": {"name": "w"},
        "spec": {"agentType": "worker", field: value},
    }
    with pytest.raises(client.ApiException) as info:
        cluster.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "meshagents", body
        )
    message = json.loads(info.value.body)["message"]
    assert f"spec.{field}" in message and rule in message


def test_a_rotation_into_a_secret_somebody_else_planted_is_refused_and_said(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    credential = external_agent(cluster, namespace, "ext", "worker")
    core = client.CoreV1Api(cluster.api)
    core.delete_namespaced_secret("ext-mesh-credential", namespace)
    core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "ext-mesh-credential"}, "stringData": {"credential": "planted"}},
    )
    _patch_spec(cluster, namespace, "ext", credentialRotation="r1")

    def warned() -> str | None:
        events = core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=ext,reason=CredentialSecretNotOwned"
        ).items
        return events[0].message if events else None

    message = wait_for("a Warning Event about the planted Secret", warned)
    assert f"Secret {namespace}/ext-mesh-credential exists but is not owned" in message
    assert credential_of(cluster, namespace, "ext") == "planted"  # left untouched
    assert "rotation" not in _status(cluster, namespace, "ext")["credential"]
    assert exchange(operator, namespace, "ext", credential).status_code == 200  # not rotated
