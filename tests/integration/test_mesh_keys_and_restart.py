"""Signing keys and revocations live in the cluster: revocations stored by an older
operator still refuse after an upgrade, and a rotation keeps old tokens valid for the
overlap window only. (Keys, revocations and health after the operator is killed:
test_fault_operator_killed.py.)"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import jwt
from kubernetes import client

from agent_mesh.domain.message import Message, MessageType
from tests.support.agents import SETTINGS, fleet
from tests.support.cluster import Cluster
from tests.support.mesh_api import call, error_of, jwks_kids, token_for_agent, token_of
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
    # an overlap far longer than a stalled machine takes from seeing the new key to the
    # next call: the call below lands inside it, so it is asserted, not hoped for
    overlap = 12.0
    windows = {"AGENT_MESH_KEY_OVERLAP_SECONDS": str(overlap)}
    with keys_operator(cluster, tmp_path / "operator.log", system, windows=windows) as operator:
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
            "the old key to retire",
            lambda: jwks_kids(operator) == kids - {old_kid},
            timeout=overlap + 20,
        )
        refused = call(operator, "GET", "/v1/whoami", old_token)
        assert refused.status_code == 401
        assert error_of(refused)["code"] == "UnknownKey"
        # new tokens use the new key
        new_token = token_of(cluster, operator, own_namespace, "rotated", "worker")
        assert call(operator, "GET", "/v1/whoami", new_token).status_code == 200


def test_a_running_agent_accepts_the_rotated_key_and_refuses_the_retired_one(
    cluster: Cluster, crds: object, own_namespace: str, system_namespace: str, tmp_path: Path
) -> None:
    """An agent process started before a rotation: within a few of its sync intervals it
    verifies tokens signed with the new key, and refuses the old key's once it retired."""
    system = system_namespace
    with (
        keys_operator(cluster, tmp_path / "operator.log", system) as operator,
        fleet(
            cluster,
            operator,
            own_namespace,
            [("echo_worker.py", "keeper", "worker", ["echo"])],
            tmp_path,
        ) as agents,
    ):
        url = agents["keeper"].url
        sync = float(SETTINGS["AGENT_MESH_POLICY_SYNC_SECONDS"])

        def to_keeper(caller: str) -> str:
            token = token_of(cluster, operator, own_namespace, caller, "orchestrator")
            return token_for_agent(operator, token, own_namespace, "keeper")

        def answer(caller: str, token: str) -> int:
            message = Message.new(MessageType.REQUEST, caller, "keeper", "hi")
            return httpx.post(
                f"{url}/v1/messages",
                headers={"Authorization": f"Bearer {token}"},
                json=message.to_wire(),
                timeout=10,
            ).status_code

        old = to_keeper("before")
        (old_kid,) = jwks_kids(operator)
        assert jwt.get_unverified_header(old)["kid"] == old_kid
        assert answer("before", old) == 200
        client.CoreV1Api(cluster.api).patch_namespaced_secret(
            "agent-mesh-signing-keys",
            system,
            {
                "metadata": {
                    "annotations": {"agentmesh.io/rotate": dt.datetime.now(dt.UTC).isoformat()}
                }
            },
        )
        wait_for("a second key in the JWKS", lambda: len(jwks_kids(operator)) == 2)
        new = to_keeper("after")
        assert jwt.get_unverified_header(new)["kid"] != old_kid  # signed with the new key
        wait_for(
            "the agent to verify the new key",
            lambda: answer("after", new) == 200,
            timeout=5 * sync,
        )
        wait_for("the old key to retire", lambda: old_kid not in jwks_kids(operator), timeout=20)
        wait_for(
            "the agent to refuse the retired key",
            lambda: answer("before", old) == 401,
            timeout=5 * sync,
        )
        assert answer("after", new) == 200
