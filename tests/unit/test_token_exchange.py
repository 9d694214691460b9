"""Token exchange on the mesh API (a mesh-API token → tokens addressed to recipient agents),
every way it refuses, and the SDK's side: recipient tokens cached per recipient, renewed at
80% of their lifetime, batched for broadcasts; the agent's gate, which takes only tokens
addressed to itself; and the operator's health events, one short-lived token per monitor."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pydantic
import pytest

from agent_mesh.auth.tokens import (
    GRANT_TOKEN_EXCHANGE,
    MeshClaims,
    TokenVerifier,
)
from agent_mesh.config import OperatorConfig
from agent_mesh.domain.egress import EgressClass
from agent_mesh.domain.errors import AuthError, ValidationError
from agent_mesh.domain.message import Message
from agent_mesh.health.broadcast import HealthBroadcaster
from agent_mesh.runtime.services import auth_settings
from agent_mesh.sdk.gate import Gate
from agent_mesh.sdk.identity import TokenSource
from agent_mesh.sdk.recipients import RecipientTokens
from agent_mesh.transport.client import Delivery, Outcome, Transport
from tests.support.clocks import Ticks
from tests.support.memory_mesh import (
    CREDENTIAL,
    MemoryMesh,
    agent_record,
    error_body,
    memory_mesh_fixture,
)

mesh = memory_mesh_fixture(
    lambda: (
        [agent_record(a, "worker") for a in ("w1", "w2")] + [agent_record("boss", "orchestrator")]
    ),
    max_body_bytes=4096,
    whole_second=False,
)
"""The mesh API on loopback over the authority's state in memory: two workers and a boss."""


async def exchange(mesh: MemoryMesh, subject: str, **body: Any) -> Any:
    return await mesh.client.post(
        "/v1/token", json={"grantType": GRANT_TOKEN_EXCHANGE, "subjectToken": subject, **body}
    )


def claims_at(mesh: MemoryMesh, token: str, audience: str) -> MeshClaims:
    verifier = TokenVerifier(
        mesh.authority.keyring, mesh.clock, mesh.authority.revocations, audience=audience
    )
    return verifier.verify(token)


def source(mesh: MemoryMesh, agent_id: str) -> TokenSource:
    url = str(mesh.client.make_url("")).rstrip("/")
    return TokenSource(url, namespace="ns", agent_id=agent_id, credential=CREDENTIAL)


# --- the exchange ---------------------------------------------------------------------


async def test_exchange_issues_a_short_lived_token_for_the_recipient_carrying_the_caller(
    mesh: MemoryMesh,
) -> None:
    response = await exchange(mesh, await mesh.token("w1"), audience="ns/w2")
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["tokenType"] == "Bearer"
    assert body["issuedTokenType"] == "urn:ietf:params:oauth:token-type:jwt"
    assert (body["audience"], body["expiresIn"]) == ("ns/w2", 300)
    claims = claims_at(mesh, body["accessToken"], "ns/w2")
    assert (claims.sub, claims.agent_type, claims.namespace, claims.agent_uid, claims.aud) == (
        "w1",
        "worker",
        "ns",
        "uid-w1",
        "ns/w2",
    )
    (record,) = mesh.authority.audit.recent(event="token.exchanged")
    assert (record["agentId"], record["audiences"]) == ("w1", ["ns/w2"])


async def test_a_recipient_token_is_refused_by_the_mesh_api(mesh: MemoryMesh) -> None:
    body = await (await exchange(mesh, await mesh.token("w1"), audience="ns/w2")).json()
    headers = {"Authorization": f"Bearer {body['accessToken']}"}
    response = await mesh.client.get("/v1/whoami", headers=headers)
    assert response.status == 401
    error = await error_body(response)
    assert (error["code"], error["field"]) == ("WrongAudience", "aud")


async def test_exchange_refuses_an_unknown_recipient(mesh: MemoryMesh) -> None:
    response = await exchange(mesh, await mesh.token("w1"), audience="ns/nobody")
    assert response.status == 400
    error = await error_body(response)
    assert (error["code"], error["field"]) == ("RecipientUnknown", "audience")
    (record,) = mesh.authority.audit.recent(event="token.exchanged")
    assert record["refused"] == ["ns/nobody"]


async def test_exchange_refuses_a_recipient_token_as_subject(mesh: MemoryMesh) -> None:
    """No chaining: what an agent received cannot be turned into tokens for others."""
    first = await (await exchange(mesh, await mesh.token("w1"), audience="ns/w2")).json()
    response = await exchange(mesh, first["accessToken"], audience="ns/boss")
    assert response.status == 401
    error = await error_body(response)
    assert (error["code"], error["field"]) == ("WrongAudience", "subjectToken")
    assert "cannot be exchanged again" in error["message"]
    refused = mesh.authority.audit.recent(event="token.refused")
    assert refused and refused[0]["code"] == "WrongAudience"


async def test_exchange_refuses_the_operators_dispatch_token_as_subject(mesh: MemoryMesh) -> None:
    dispatch = mesh.authority.operator_token("ns", "w1", 330)
    response = await exchange(mesh, dispatch, audience="ns/w2")
    assert response.status == 401
    assert (await error_body(response))["code"] == "WrongAudience"


@pytest.mark.parametrize(
    "grant", ["client_credentials", "urn:ietf:params:oauth:grant-type:jwt-bearer", None]
)
async def test_exchange_refuses_another_grant_type(mesh: MemoryMesh, grant: str | None) -> None:
    body: dict[str, Any] = {"subjectToken": await mesh.token("w1"), "audience": "ns/w2"}
    if grant is not None:
        body["grantType"] = grant
    response = await mesh.client.post("/v1/token", json=body)
    assert response.status == 400
    error = await error_body(response)
    assert (error["code"], error["field"]) == ("UnsupportedGrantType", "grantType")


@pytest.mark.parametrize("body", [{}, {"audiences": []}])
async def test_exchange_needs_an_audience(mesh: MemoryMesh, body: dict[str, Any]) -> None:
    response = await exchange(mesh, await mesh.token("w1"), **body)
    assert response.status == 400
    error = await error_body(response)
    assert (error["code"], error["field"]) == ("AudienceMissing", "audience")


async def test_exchange_refuses_more_than_256_audiences(mesh: MemoryMesh) -> None:
    audiences = [f"ns/a{i}" for i in range(257)]
    response = await exchange(mesh, await mesh.token("w1"), audiences=audiences)
    assert response.status == 400
    error = await error_body(response)
    assert (error["code"], error["field"]) == ("TooManyAudiences", "audiences")


async def test_exchange_refuses_audience_and_audiences_together(mesh: MemoryMesh) -> None:
    response = await exchange(mesh, await mesh.token("w1"), audience="ns/w2", audiences=["ns/boss"])
    assert response.status == 400
    assert (await error_body(response))["field"] == "audiences"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"audience": "agent-mesh"}, "audience"),  # the mesh API is not a recipient
        ({"audience": "ns/w2/x"}, "audience"),
        ({"audience": "NS/w2"}, "audience"),
        ({"audiences": ["ns/w2", "w2"]}, "audiences[1]"),
        ({"audience": "ns/w2", "subjectTokenType": "urn:x"}, "subjectTokenType"),
    ],
)
async def test_exchange_refuses_a_malformed_request_naming_the_field(
    mesh: MemoryMesh, body: dict[str, Any], field: str
) -> None:
    response = await exchange(mesh, await mesh.token("w1"), **body)
    assert response.status == 400
    assert (await error_body(response))["field"] == field


async def test_exchange_refuses_an_invalid_subject_token_naming_it(mesh: MemoryMesh) -> None:
    garbage = await exchange(mesh, "not.a.token", audience="ns/w2")
    assert garbage.status == 401
    assert (await error_body(garbage))["field"] == "subjectToken"
    old = await mesh.token("w1")
    mesh.clock.advance(3600 + 31)
    expired = await exchange(mesh, old, audience="ns/w2")
    error = await error_body(expired)
    assert (error["code"], error["field"]) == ("TokenExpired", "subjectToken")


async def test_exchange_refuses_the_token_of_a_revoked_or_deleted_agent(
    mesh: MemoryMesh,
) -> None:
    token = await mesh.token("w1")
    await mesh.authority.revoke_agent("ns", "w1", actor="test")
    revoked = await exchange(mesh, token, audience="ns/w2")
    assert (await error_body(revoked))["code"] == "TokenRevoked"
    gone = await mesh.token("w2")
    mesh.registry.remove("ns", "w2")
    deleted = await exchange(mesh, gone, audience="ns/boss")
    assert (await error_body(deleted))["code"] == "AgentUnknown"


async def test_a_batch_exchange_answers_each_recipient_on_its_own(mesh: MemoryMesh) -> None:
    response = await exchange(
        mesh, await mesh.token("boss"), audiences=["ns/w1", "ns/ghost", "ns/w2", "ns/w1"]
    )
    assert response.status == 200
    items = (await response.json())["tokens"]
    assert [i["audience"] for i in items] == ["ns/w1", "ns/ghost", "ns/w2"]  # once each
    assert claims_at(mesh, items[0]["accessToken"], "ns/w1").sub == "boss"
    assert claims_at(mesh, items[2]["accessToken"], "ns/w2").sub == "boss"
    assert items[1]["error"]["code"] == "RecipientUnknown"
    assert items[1]["status"] == 400
    assert "accessToken" not in items[1]


async def test_a_recipient_token_never_outlives_the_token_it_came_from(mesh: MemoryMesh) -> None:
    subject = await mesh.token("w1")
    mesh.clock.advance(3600 - 100)
    body = await (await exchange(mesh, subject, audience="ns/w2")).json()
    assert body["expiresIn"] <= 100


# --- the SDK: recipient tokens, cached and renewed --------------------------------------


@contextlib.asynccontextmanager
async def closed_after(recipients: RecipientTokens) -> AsyncIterator[RecipientTokens]:
    """`recipients` for the block, closed after it."""
    try:
        yield recipients
    finally:
        await recipients.close()


async def test_recipient_tokens_are_cached_per_recipient_and_renewed_at_80_percent(
    mesh: MemoryMesh,
) -> None:
    clock = Ticks(1000.0)
    async with closed_after(RecipientTokens(source(mesh, "boss"), clock=clock)) as recipients:
        first = await recipients.token_for("ns", "w1")
        assert await recipients.token_for("ns", "w1") == first
        other = await recipients.token_for("ns", "w2")
        assert other != first
        assert recipients.exchanges == 2
        assert claims_at(mesh, first, "ns/w1").aud == "ns/w1"
        clock.now += 0.79 * 300
        assert await recipients.token_for("ns", "w1") == first
        clock.now += 0.02 * 300
        mesh.clock.advance(1)  # a new iat, so a visibly new token
        renewed = await recipients.token_for("ns", "w1")
        assert renewed != first
        assert recipients.exchanges == 3


async def test_a_broadcast_asks_once_for_every_recipient_not_cached(mesh: MemoryMesh) -> None:
    async with closed_after(RecipientTokens(source(mesh, "boss"))) as recipients:
        cached = await recipients.token_for("ns", "w1")
        grants = await recipients.tokens_for([("ns", "w1"), ("ns", "w2"), ("ns", "ghost")])
        assert recipients.exchanges == 2
        assert grants[("ns", "w1")] == cached
        assert claims_at(mesh, str(grants[("ns", "w2")]), "ns/w2").sub == "boss"
        ghost = grants[("ns", "ghost")]
        assert isinstance(ghost, ValidationError) and ghost.code == "RecipientUnknown"
        with pytest.raises(ValidationError):
            await recipients.token_for("ns", "ghost")


async def test_concurrent_calls_to_one_recipient_share_one_exchange(mesh: MemoryMesh) -> None:
    async with closed_after(RecipientTokens(source(mesh, "boss"))) as recipients:
        tokens = await asyncio.gather(*(recipients.token_for("ns", "w1") for _ in range(20)))
        assert len(set(tokens)) == 1
        assert recipients.exchanges == 1


async def test_a_forgotten_token_is_exchanged_again(mesh: MemoryMesh) -> None:
    async with closed_after(RecipientTokens(source(mesh, "boss"))) as recipients:
        await recipients.token_for("ns", "w1")
        recipients.forget("ns", "w1")
        await recipients.token_for("ns", "w1")
        assert recipients.exchanges == 2


async def test_a_revoked_subject_token_is_renewed_and_the_exchange_retried(
    mesh: MemoryMesh,
) -> None:
    tokens = source(mesh, "boss")
    async with closed_after(RecipientTokens(tokens)) as recipients:
        old = await tokens.token()
        jti = claims_at(mesh, old, "agent-mesh").jti
        await mesh.authority.revoke_token(jti, actor="test", namespace="ns")
        token = await recipients.token_for("ns", "w1")
        assert claims_at(mesh, token, "ns/w1").sub == "boss"
        assert await tokens.token() != old


# --- the agent's gate -------------------------------------------------------------------


async def test_the_gate_takes_only_tokens_addressed_to_its_own_agent(
    mesh: MemoryMesh,
) -> None:
    gate = Gate(source(mesh, "w1"))
    await gate.sync()
    boss = await mesh.token("boss")

    async def refusal(token: str) -> AuthError:
        with pytest.raises(AuthError) as caught:
            await gate.authenticate(f"Bearer {token}")
        return caught.value

    for_w1 = await (await exchange(mesh, boss, audience="ns/w1")).json()
    assert (await gate.authenticate(f"Bearer {for_w1['accessToken']}")).sub == "boss"
    assert (await refusal(boss)).code == "WrongAudience"  # the caller's own mesh token
    for_w2 = await (await exchange(mesh, boss, audience="ns/w2")).json()
    assert (await refusal(for_w2["accessToken"])).code == "WrongAudience"
    dispatch_w2 = mesh.authority.operator_token("ns", "w2", 60)
    assert (await refusal(dispatch_w2)).code == "WrongAudience"
    dispatch_w1 = mesh.authority.operator_token("ns", "w1", 60)
    assert (await gate.authenticate(f"Bearer {dispatch_w1}")).sub == "agent-mesh-operator"
    elsewhere = mesh.authority.operator_token("other", "w1", 60)  # same agentId, other ns
    assert (await refusal(elsewhere)).code == "WrongAudience"


# --- the operator's health events: one short-lived token per monitor ---------------------


class CapturingTransport(Transport):
    """Records what a broadcast would send, sending nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[dict[str, str], dict[str, str]]] = []

    async def broadcast(
        self,
        targets: Mapping[str, str],
        message: Message,
        *,
        token: str | None = None,
        tokens: Mapping[str, str] | None = None,
        egress: Mapping[str, EgressClass] | None = None,
    ) -> dict[str, Delivery]:
        assert token is None  # never one token for every monitor
        self.sent.append((dict(targets), dict(tokens or {})))
        return {name: Delivery(name, Outcome.OK, 1, status=202) for name in targets}


async def test_health_events_carry_a_short_lived_token_per_monitor(mesh: MemoryMesh) -> None:
    for agent_id in ("mon-a", "mon-b"):
        mesh.registry.upsert(
            agent_record(agent_id, "monitor", endpoint=f"http://127.0.0.1:9/{agent_id}")
        )
    transport = CapturingTransport()
    broadcaster = HealthBroadcaster(mesh.registry, mesh.monitor.tracker, mesh.authority, transport)
    await broadcaster({"namespace": "ns", "agentId": "w1", "health": "healthy"})
    ((targets, tokens),) = transport.sent
    assert set(targets) == set(tokens) == {"mon-a", "mon-b"}
    for agent_id, token in tokens.items():
        claims = claims_at(mesh, token, f"ns/{agent_id}")
        assert (claims.sub, claims.namespace) == ("agent-mesh-operator", "ns")
        assert claims.exp - claims.iat == 60
    with pytest.raises(AuthError) as caught:
        claims_at(mesh, tokens["mon-a"], "ns/mon-b")
    assert caught.value.code == "WrongAudience"
    await broadcaster.close()


# --- configuration -----------------------------------------------------------------------


def test_token_lifetimes_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_MESH_RECIPIENT_TOKEN_SECONDS", "120")
    monkeypatch.setenv("AGENT_MESH_DISPATCH_TOKEN_MARGIN_SECONDS", "5")
    monkeypatch.setenv("AGENT_MESH_BROADCAST_TOKEN_SECONDS", "30")
    settings = auth_settings(OperatorConfig())
    assert settings.recipient_token_lifetime.total_seconds() == 120
    assert settings.dispatch_token_margin.total_seconds() == 5
    assert settings.broadcast_token_lifetime.total_seconds() == 30


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AGENT_MESH_RECIPIENT_TOKEN_SECONDS", "5"),  # below 30 s
        ("AGENT_MESH_RECIPIENT_TOKEN_SECONDS", "7200"),  # a recipient token is short-lived
        ("AGENT_MESH_DISPATCH_TOKEN_MARGIN_SECONDS", "0"),
        ("AGENT_MESH_BROADCAST_TOKEN_SECONDS", "3600"),
    ],
)
def test_token_lifetimes_out_of_range_are_refused_naming_them(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(pydantic.ValidationError) as caught:
        OperatorConfig()
    assert variable.removeprefix("AGENT_MESH_").lower() in str(caught.value)
