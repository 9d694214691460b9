"""An external agent's credential Secret (<name>-mesh-credential) with the session's
operator: one the MeshAgent does not own is refused and left alone; one planted under a
forged ownerReference never lends its value."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.testing import OperatorProcess, credential_of
from tests.support.cluster import Cluster
from tests.support.mesh_api import apply_agent, error_of, exchange
from tests.support.tasks import wait_agent_condition
from tests.support.waiting import wait_for


def _agent(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
        GROUP, VERSION, namespace, "meshagents", name
    )


def _plant(
    cluster: Cluster, namespace: str, name: str, value: str, owner: dict[str, Any] | None = None
) -> None:
    metadata: dict[str, Any] = {"name": f"{name}-mesh-credential"}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    client.CoreV1Api(cluster.api).create_namespaced_secret(
        namespace, {"metadata": metadata, "stringData": {"credential": value}}
    )


def _stored(cluster: Cluster, namespace: str, name: str) -> str:
    secret = client.CoreV1Api(cluster.api).read_namespaced_secret(
        f"{name}-mesh-credential", namespace
    )
    return base64.b64decode(secret.data["credential"]).decode()


def test_a_credential_secret_the_agent_does_not_own_is_refused_and_left_untouched(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    _plant(cluster, namespace, "ext", "planted-by-someone")
    apply_agent(cluster, namespace, "ext", "worker", endpoint="http://127.0.0.1:9")
    refused = wait_agent_condition(cluster, namespace, "ext", "CredentialIssued", status="False")
    assert refused["reason"] == "CredentialSecretNotOwned"
    assert f"Secret {namespace}/ext-mesh-credential exists but is not owned" in refused["message"]
    events = wait_for(
        "a Warning Event naming the Secret",
        lambda: [
            e
            for e in client.CoreV1Api(cluster.api)
            .list_namespaced_event(namespace, field_selector="involvedObject.name=ext")
            .items
            if e.reason == "CredentialSecretNotOwned"
        ],
    )
    assert events[0].type == "Warning"
    assert "ext-mesh-credential" in events[0].message
    assert _stored(cluster, namespace, "ext") == "planted-by-someone"  # not replaced
    assert not _agent(cluster, namespace, "ext").get("status", {}).get("credential")
    planted = exchange(operator, namespace, "ext", "planted-by-someone")
    assert planted.status_code == 401
    # once the Secret is gone, the operator issues the agent's own
    client.CoreV1Api(cluster.api).delete_namespaced_secret("ext-mesh-credential", namespace)
    wait_agent_condition(cluster, namespace, "ext", "CredentialIssued", timeout=60, status="True")
    credential = credential_of(cluster, namespace, "ext")
    assert credential != "planted-by-someone"
    assert exchange(operator, namespace, "ext", credential).status_code == 200


def test_a_credential_planted_under_a_forged_owner_reference_is_never_used(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    apply_agent(cluster, namespace, "ext2", "worker", endpoint="http://127.0.0.1:9")
    first = credential_of(cluster, namespace, "ext2")
    agent = _agent(cluster, namespace, "ext2")
    first_hash = agent["status"]["credential"]["sha256"]
    # someone who may create Secrets (but not read them) swaps in a value of their own,
    # with an ownerReference naming the agent's uid (anyone can write one), and the
    # credential is being rotated (status.credential cleared, as docs/security.md says)
    core = client.CoreV1Api(cluster.api)
    core.delete_namespaced_secret("ext2-mesh-credential", namespace)
    owner = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MeshAgent",
        "name": "ext2",
        "uid": agent["metadata"]["uid"],
    }
    _plant(cluster, namespace, "ext2", "known-to-the-attacker", owner)
    cluster.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "meshagents", "ext2", {"status": {"credential": None}}
    )
    cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "meshagents", "ext2", {"spec": {"version": "2"}}
    )
    wait_for(
        "a new status.credential",
        lambda: (
            (c := _agent(cluster, namespace, "ext2").get("status", {}).get("credential"))
            and c["sha256"] != first_hash
        ),
    )
    stored = _stored(cluster, namespace, "ext2")
    assert stored not in ("known-to-the-attacker", first)  # the object kept, its value not
    refused = exchange(operator, namespace, "ext2", "known-to-the-attacker")
    assert refused.status_code == 401
    assert error_of(refused)["code"] == "CredentialInvalid"
    assert exchange(operator, namespace, "ext2", stored).status_code == 200


async def test_a_handler_run_on_a_stale_body_keeps_the_credential_already_issued(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    """kopf may run the registration handler again on a watch event older than its own
    status write: that run must not rotate the credential an agent has just read."""
    from kubernetes_asyncio import config as aconfig

    from agent_mesh.kube.credentials import ensure_credential

    apply_agent(cluster, namespace, "ext3", "worker", endpoint="http://127.0.0.1:9")
    issued = credential_of(cluster, namespace, "ext3")
    current = _agent(cluster, namespace, "ext3")
    stale = {**current, "status": {}}  # the body as an earlier watch event had it
    api = await aconfig.new_client_from_config(str(cluster.kubeconfig))
    try:
        again = await ensure_credential(api, stale, dt.datetime.now(dt.UTC))
    finally:
        await api.close()
    assert again == current["status"]["credential"]
    assert _stored(cluster, namespace, "ext3") == issued
    assert exchange(operator, namespace, "ext3", issued).status_code == 200
