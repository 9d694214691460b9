"""The SDK's identity and heartbeats against the real operator: exchange, beat, renewal
after a revocation, refusal of a wrong credential."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.domain.errors import AuthError
from agent_mesh.sdk.heartbeat import send_heartbeat
from agent_mesh.testing import OperatorProcess
from tests.support.cluster import Cluster
from tests.support.mesh_api import call, external_agent, token_of, token_source
from tests.support.waiting import wait_for_async


def _health(cluster: Cluster, namespace: str, name: str) -> Any:
    obj = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "meshagents", name)
    return obj.get("status", {}).get("healthStatus")


async def test_sdk_agent_gets_a_token_beats_and_renews_after_revocation(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    credential = external_agent(cluster, namespace, "sdk-worker", "worker")
    source = token_source(operator, namespace, "sdk-worker", credential)
    first = await source.token()
    assert await source.token() == first  # cached until renewal is due
    assert source.identity is not None and source.identity.agent_type == "worker"
    async with aiohttp.ClientSession() as session:
        assert await send_heartbeat(session, source, active_tasks=1, version="0.1.0") == 200
        await wait_for_async(
            "the SDK agent to be healthy",
            lambda: _health(cluster, namespace, "sdk-worker") == "healthy",
        )

        admin = token_of(cluster, operator, namespace, "sdk-admin", "orchestrator")
        jti = call(operator, "GET", "/v1/whoami", first).json()["jti"]
        assert call(operator, "POST", "/v1/revocations", admin, json={"jti": jti}).is_success
        # the revoked token is refused, the SDK exchanges again and the beat goes through
        assert await send_heartbeat(session, source, active_tasks=0) == 200
    assert await source.token() != first


async def test_wrong_credential_raises_with_the_servers_code(
    operator: OperatorProcess, namespace: str
) -> None:
    source = token_source(operator, namespace, "nobody", "x")
    with pytest.raises(AuthError) as caught:
        await source.token()
    assert caught.value.code == "CredentialInvalid"
