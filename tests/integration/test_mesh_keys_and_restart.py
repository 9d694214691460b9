"""Signing keys and revocations live in the cluster: revocations stored by an older
operator still refuse after an upgrade, and a rotation keeps old tokens valid for the
overlap window only. (Keys, revocations and health after the operator is killed:
test_fault_operator_killed.py.)"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from kubernetes import client

from tests.support.cluster import Cluster
from tests.support.mesh_api import call, error_of, jwks_kids, token_of
from tests.support.namespaces import namespace_fixture
from tests.support.operators import KEYS_FAMILY, keys_operator
from tests.support.waiting import wait_for

own_namespace = namespace_fixture(KEYS_FAMILY)
system_namespace = namespace_fixture(f"{KEYS_FAMILY}sys-")


def test_revocations_stored_before_namespace_scoping_still_refuse_and_are_migrated(
    cluster: Cluster, crds: object, own_namespace: str, system_namespace: str, tmp_path: Path
) -> None:
    """A revocation ConfigMap written by an operator from before scoping (jti entries
    without a namespace, agent entries without an expiry) keeps refusing those tokens
    after the upgrade, and is rewritten in the new form with each entry's expiry."""
    system = system_namespace
    with keys_operator(cluster, tmp_path / "first.log", system) as operator:
        by_jti = token_of(cluster, operator, own_namespace, "old-jti", "worker")
        by_agent = token_of(cluster, operator, own_namespace, "old-agent", "worker")
        jti = call(operator, "GET", "/v1/whoami", by_jti).json()["jti"]
    now = dt.datetime.now(dt.UTC)
    legacy = {
        "tokens": {jti: (now + dt.timedelta(hours=1)).isoformat()},
        "agents": [{"namespace": own_namespace, "agentId": "old-agent", "before": now.isoformat()}],
    }
    # as an operator from before scoping left it (this one already wrote the new form)
    client.CoreV1Api(cluster.api).replace_namespaced_config_map(
        "agent-mesh-revocations",
        system,
        {
            "metadata": {"name": "agent-mesh-revocations"},
            "data": {"revocations.json": json.dumps(legacy)},
        },
    )
    with keys_operator(cluster, tmp_path / "second.log", system) as upgraded:
        for token in (by_jti, by_agent):
            refused = call(upgraded, "GET", "/v1/whoami", token)
            assert refused.status_code == 401
            assert error_of(refused)["code"] == "TokenRevoked"
        stored = json.loads(
            client.CoreV1Api(cluster.api)
            .read_namespaced_config_map("agent-mesh-revocations", system)
            .data["revocations.json"]
        )
        assert list(stored["tokensByNamespace"]) == ["*"]  # namespace unknown: all of them
        assert list(stored["tokensByNamespace"]["*"]) == [jti]
        (agent,) = stored["agents"]
        assert agent["agentId"] == "old-agent" and "expiresAt" in agent
        assert stored["longestTokenLifetime"]["seconds"] == 3600


def test_rotation_keeps_old_tokens_valid_for_the_overlap_only(
    cluster: Cluster, crds: object, own_namespace: str, system_namespace: str, tmp_path: Path
) -> None:
    system = system_namespace
    with keys_operator(cluster, tmp_path / "operator.log", system) as operator:
        old_token = token_of(cluster, operator, own_namespace, "rotating", "worker")
        (old_kid,) = jwks_kids(operator)
        client.CoreV1Api(cluster.api).patch_namespaced_secret(
            "agent-mesh-signing-keys",
            system,
            {
                "metadata": {
                    "annotations": {"agentmesh.io/rotate": dt.datetime.now(dt.UTC).isoformat()}
                }
            },
        )
        kids = wait_for(
            "a second key in the JWKS", lambda: (k := jwks_kids(operator)) and len(k) == 2 and k
        )
        assert old_kid in kids
        # during the overlap the old token still verifies
        assert call(operator, "GET", "/v1/whoami", old_token).status_code == 200
        wait_for(
            "the old key to retire", lambda: jwks_kids(operator) == kids - {old_kid}, timeout=20
        )
        refused = call(operator, "GET", "/v1/whoami", old_token)
        assert refused.status_code == 401
        assert error_of(refused)["code"] == "UnknownKey"
        # new tokens use the new key
        new_token = token_of(cluster, operator, own_namespace, "rotated", "worker")
        assert call(operator, "GET", "/v1/whoami", new_token).status_code == 200
