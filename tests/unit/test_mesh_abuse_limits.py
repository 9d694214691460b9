"""The mesh API's abuse limits over HTTP on loopback (authority in memory): 429 with
Retry-After on token exchange per source and per agent and after repeated failed
authentication, 400 for deeply nested bodies, and refusals that never push other audit
records out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent_mesh.domain.ratelimit import Rate
from agent_mesh.mesh.limits import AbuseLimits
from tests.support.clocks import Ticks
from tests.support.memory_mesh import MemoryMesh, agent_record, error_body, start_memory_mesh

LIMITS = AbuseLimits(
    token_per_source=Rate(10, 1),
    token_per_agent=Rate(3, 0.1),
    failures_per_source=Rate(5, 1),
)


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
async def mesh(ticks: Ticks) -> AsyncIterator[MemoryMesh]:
    agents = [agent_record(a, "worker") for a in ("w1", "w2", "w3")]
    mesh = await start_memory_mesh(
        [*agents, agent_record("boss", "orchestrator")], limits=LIMITS, ticks=ticks
    )
    yield mesh
    await mesh.client.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_requests_over_the_per_source_limit_get_429_with_retry_after(
    mesh: MemoryMesh, ticks: Ticks
) -> None:
    agents = ["w1", "w2", "w3", "boss"]
    for i in range(10):  # the source's burst, spread so no agent reaches its own limit
        assert (await mesh.exchange(agents[i % 4])).status == 200
    refused = await mesh.exchange("w1")
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    error = await error_body(refused)
    assert error["code"] == "RateLimited"
    assert "too many token requests from 127.0.0.1" in error["message"]
    ticks.now += 1  # one token back at 1/s
    assert (await mesh.exchange("w3")).status == 200


async def test_malformed_token_requests_spend_the_source_budget_too(mesh: MemoryMesh) -> None:
    for _ in range(10):
        assert (await mesh.client.post("/v1/token", data=b"not json")).status == 400
    assert (await mesh.exchange("w1")).status == 429


async def test_tokens_for_one_agent_over_its_limit_get_429_while_others_get_theirs(
    mesh: MemoryMesh, ticks: Ticks
) -> None:
    for _ in range(3):
        assert (await mesh.exchange("w1")).status == 200
    refused = await mesh.exchange("w1")
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "10"  # one token at 0.1/s
    assert "too many tokens issued to agent ns/w1" in (await error_body(refused))["message"]
    assert (await mesh.exchange("w2")).status == 200
    ticks.now += 10
    assert (await mesh.exchange("w1")).status == 200


async def test_wrong_credentials_do_not_spend_the_agents_own_budget(mesh: MemoryMesh) -> None:
    for _ in range(4):  # an attacker guessing w1's credential
        wrong = await mesh.exchange("w1", credential="guess")
        assert wrong.status == 401
    for _ in range(3):  # w1 itself is not locked out by it
        assert (await mesh.exchange("w1")).status == 200


async def test_a_source_with_too_many_failed_authentications_is_refused_before_any_check(
    mesh: MemoryMesh, ticks: Ticks
) -> None:
    good = await mesh.token("w1")
    for _ in range(5):
        bad = await mesh.client.get("/v1/whoami", headers=_bearer("not.a.token"))
        assert bad.status == 401
    refused = await mesh.client.get("/v1/whoami", headers=_bearer(good))
    assert refused.status == 429  # even a good token: the source is refused, not the token
    assert refused.headers["Retry-After"] == "1"
    assert "too many failed authentications" in (await error_body(refused))["message"]
    assert (await mesh.exchange("w2")).status == 429  # token exchange too
    for probe in ("/healthz", "/readyz", "/.well-known/jwks.json", "/metrics"):
        assert (await mesh.client.get(probe)).status == 200, probe
    ticks.now += 1
    assert (await mesh.client.get("/v1/whoami", headers=_bearer(good))).status == 200


async def test_failed_credential_exchanges_count_as_failed_authentications(
    mesh: MemoryMesh,
) -> None:
    for _ in range(5):
        assert (await mesh.exchange("w1", credential="guess")).status == 401
    assert (await mesh.exchange("w1")).status == 429


async def test_refusals_are_counted_and_audited_in_summary(mesh: MemoryMesh) -> None:
    for _ in range(5):
        await mesh.client.get("/v1/whoami", headers=_bearer("not.a.token"))
    for _ in range(50):
        assert (await mesh.client.get("/v1/whoami")).status == 429
    throttled = mesh.audit.recent(event="request.throttled")
    assert len(throttled) == 1  # one record stands for a burst of refusals
    assert throttled[0]["limit"] == "auth-failures-per-source"
    assert throttled[0]["source"] == "127.0.0.1"
    metrics = await (await mesh.client.get("/metrics")).text()
    assert 'agentmesh_mesh_requests_throttled_total{limit="auth-failures-per-source"}' in metrics


async def test_throttle_records_carry_how_many_refusals_they_summarise(
    mesh: MemoryMesh, ticks: Ticks
) -> None:
    for _ in range(5):
        await mesh.client.get("/v1/whoami", headers=_bearer("not.a.token"))
    for _ in range(7):
        await mesh.client.get("/v1/whoami")
    ticks.now += 0.5  # still empty (half a token), and past no report window yet
    ticks.now += 10
    for _ in range(5):  # refill gave 5 more failures' worth: spend them, then one more
        await mesh.client.get("/v1/whoami", headers=_bearer("not.a.token"))
    await mesh.client.get("/v1/whoami")
    latest = mesh.audit.recent(event="request.throttled")
    assert [r["suppressed"] for r in latest] == [6, 0]


async def test_a_flood_of_refusals_does_not_evict_other_audit_records(mesh: MemoryMesh) -> None:
    await mesh.token("boss")  # a token.issued record: what a flood must not push out
    for _ in range(1500):
        await mesh.client.get("/v1/whoami", headers=_bearer("not.a.token"))
    issued = mesh.audit.recent(event="token.issued")
    assert [r["agentId"] for r in issued] == ["boss"]


async def test_limits_are_off_without_a_guard() -> None:
    mesh = await start_memory_mesh([agent_record("w1", "worker")])
    try:
        for _ in range(300):
            assert (await mesh.exchange("w1")).status == 200
    finally:
        await mesh.client.close()


# --- pathological JSON ----------------------------------------------------------------


async def test_a_deeply_nested_body_is_refused_with_400_not_a_recursion_error(
    mesh: MemoryMesh,
) -> None:
    response = await mesh.client.post(
        "/v1/token", data=b"[" * 200_000, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    error = await error_body(response)
    assert (error["code"], error["field"]) == ("JsonTooDeep", "body")
    assert "limit is 64" in error["message"]


async def test_json_depth_limit_is_configurable_and_counts_the_whole_body() -> None:
    mesh = await start_memory_mesh([agent_record("w1", "worker")], max_json_depth=4)
    try:
        at_limit = await mesh.client.post("/v1/token", json={"agentId": [[[1]]]})
        assert (await error_body(at_limit))["code"] == "InvalidRequest"  # parsed, then validated
        deeper = await mesh.client.post("/v1/token", json={"agentId": [[[[1]]]]})
        assert deeper.status == 400
        assert (await error_body(deeper))["code"] == "JsonTooDeep"
    finally:
        await mesh.client.close()


# --- settings and the SDK's side -------------------------------------------------------


def test_the_limits_come_from_the_operator_config_with_generous_defaults() -> None:
    from agent_mesh.config import OperatorConfig
    from agent_mesh.runtime.services import abuse_limits

    defaults = abuse_limits(OperatorConfig())
    assert defaults.token_per_source == Rate(200, 50)
    assert defaults.token_per_agent == Rate(20, 0.5)
    assert defaults.failures_per_source == Rate(100, 10)
    configured = abuse_limits(
        OperatorConfig(token_exchange_burst_per_agent=0, auth_failure_rate_per_source=2)
    )
    assert configured.token_per_agent.unlimited
    assert configured.failures_per_source == Rate(100, 2)


async def test_the_sdk_raises_too_many_requests_with_the_servers_retry_after(
    mesh: MemoryMesh,
) -> None:
    from agent_mesh.domain.errors import TooManyRequestsError

    for _ in range(3):
        assert (await mesh.exchange("w1")).status == 200
    with pytest.raises(TooManyRequestsError) as caught:
        await mesh.tokens("w1").token()
    assert (caught.value.code, caught.value.retry_after) == ("RateLimited", 10.0)
