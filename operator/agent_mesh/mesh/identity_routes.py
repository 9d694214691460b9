"""Identity routes: JWKS, token issue and exchange, whoami, revocation, audit."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Annotated, Any, Final, Literal, Self

from aiohttp import web
from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    model_validator,
)

from agent_mesh.api.common import DnsLabel, is_dns_label
from agent_mesh.auth.authority import Authority, RecipientGrant
from agent_mesh.auth.tokens import EXCHANGE_MAX_AUDIENCES as MAX_AUDIENCES
from agent_mesh.auth.tokens import GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_JWT
from agent_mesh.domain.acl import MeshCall, policy_to_spec
from agent_mesh.domain.clock import rfc3339
from agent_mesh.domain.errors import ValidationError
from agent_mesh.domain.wire import STRICT, WireModel
from agent_mesh.mesh.http import parse_body, read_json, validate
from agent_mesh.mesh.limits import GUARD

AUTHORITY: Final = web.AppKey("authority", Authority)


class StrictModel(WireModel):
    """Request bodies: unknown fields refused."""

    model_config = STRICT


class TokenRequest(StrictModel):
    """Either a ServiceAccount token (in a pod) or an agent credential (outside)."""

    service_account_token: str | None = Field(None, min_length=1, max_length=16384)
    namespace: DnsLabel | None = None
    agent_id: DnsLabel | None = None
    credential: str | None = Field(None, min_length=1, max_length=512)

    @model_validator(mode="after")
    def _one_method(self) -> Self:
        if (self.service_account_token is None) == (self.credential is None):
            raise ValueError("send exactly one of serviceAccountToken or credential")
        if self.credential is not None and (self.namespace is None or self.agent_id is None):
            raise ValueError("a credential must come with namespace and agentId")
        return self


def _agent_audience(value: str) -> str:
    namespace, _, agent_id = value.partition("/")
    if not (is_dns_label(namespace) and is_dns_label(agent_id)):
        raise ValueError(
            f"must name one agent as <namespace>/<agentId> (DNS labels), not {value[:80]!r}"
        )
    return value


AgentAudience = Annotated[str, AfterValidator(_agent_audience)]
"""`<namespace>/<agentId>`: the one agent a token is for."""


class TokenExchangeRequest(StrictModel):
    """RFC 8693 in shape, as JSON: a mesh-API token (`subjectToken`) for a token addressed
    to one recipient agent (`audience`) or one per recipient (`audiences`, a broadcast)."""

    grant_type: Literal["urn:ietf:params:oauth:grant-type:token-exchange"]
    subject_token: str = Field(min_length=1, max_length=16384)
    subject_token_type: Literal["urn:ietf:params:oauth:token-type:jwt"] = TOKEN_TYPE_JWT
    requested_token_type: Literal["urn:ietf:params:oauth:token-type:jwt"] = TOKEN_TYPE_JWT
    audience: AgentAudience | None = None
    audiences: list[AgentAudience] | None = None


class AgentRef(StrictModel):
    namespace: DnsLabel
    agent_id: DnsLabel


class RevocationRequest(StrictModel):
    """Revoke one token by jti within a namespace (default: the caller's), or every token
    of an agent issued before a time."""

    jti: str | None = Field(None, min_length=1, max_length=128)
    namespace: DnsLabel | None = None
    agent: AgentRef | None = None
    before: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.jti is None) == (self.agent is None):
            raise ValueError("send exactly one of jti or agent")
        if self.before is not None and self.agent is None:
            raise ValueError("before applies only to an agent revocation")
        if self.namespace is not None and self.agent is not None:
            raise ValueError(
                "namespace applies only to a jti revocation (an agent's is agent.namespace)"
            )
        return self


async def jwks(request: web.Request) -> web.Response:
    ring = request.app[AUTHORITY].keyring()
    return web.json_response(ring.jwks(), headers={"Cache-Control": "public, max-age=60"})


async def issue_token(request: web.Request) -> web.Response:
    """`POST /v1/token`: a credential or ServiceAccount token for a mesh-API token, or
    (with `grantType` token-exchange) a mesh-API token for recipient tokens."""
    authority = request.app[AUTHORITY]
    guard = request.app.get(GUARD)
    if guard is not None:
        guard.token_exchange(request)
    data = await read_json(request)
    if isinstance(data, dict) and ("grantType" in data or "subjectToken" in data):
        return await _exchange(authority, data)
    body = validate(TokenRequest, data)
    if body.service_account_token is not None:
        token, claims = await authority.exchange_service_account_token(
            body.service_account_token, body.agent_id
        )
    else:
        assert body.credential and body.namespace and body.agent_id  # model validator
        token, claims = await authority.exchange_credential(
            body.namespace, body.agent_id, body.credential
        )
    expires = dt.datetime.fromtimestamp(claims.exp, dt.UTC)
    record = authority.registry.get(claims.namespace, claims.sub)
    answer: dict[str, object] = {
        "token": token,
        "tokenType": "Bearer",
        "expiresAt": rfc3339(expires),
        "expiresIn": claims.exp - claims.iat,
        "agentId": claims.sub,
        "namespace": claims.namespace,
        "agentType": claims.agent_type,
    }
    if record is not None:  # the agent takes its limit from its MeshAgent
        answer["maxConcurrentTasks"] = record.max_concurrent_tasks
    return web.json_response(answer)


async def _exchange(authority: Authority, data: dict[str, Any]) -> web.Response:
    if data.get("grantType") != GRANT_TOKEN_EXCHANGE:
        raise ValidationError(
            f"grantType must be {GRANT_TOKEN_EXCHANGE!r} to exchange a subjectToken "
            f"(got {str(data.get('grantType'))[:80]!r})",
            field="grantType",
            code="UnsupportedGrantType",
        )
    many = data.get("audiences")
    if isinstance(many, list) and len(many) > MAX_AUDIENCES:
        raise ValidationError(
            f"audiences names {len(many)} recipients; at most {MAX_AUDIENCES} per exchange "
            "(split a larger broadcast)",
            field="audiences",
            code="TooManyAudiences",
        )
    body = validate(TokenExchangeRequest, data)
    if body.audience is not None and body.audiences is not None:
        raise ValidationError(
            "send audience (one recipient) or audiences (a batch), not both", field="audiences"
        )
    if body.audience is None and not body.audiences:
        raise ValidationError(
            "audience is missing: name the recipient agent as <namespace>/<agentId> "
            "(or several in audiences)",
            field="audience",
            code="AudienceMissing",
        )
    audiences = (
        [body.audience] if body.audience is not None else list(dict.fromkeys(body.audiences or ()))
    )
    grants = await authority.exchange_for_recipients(body.subject_token, audiences)
    if body.audience is not None:
        (grant,) = grants
        if grant.error is not None:
            raise grant.error
        return web.json_response(
            {**_granted(grant), "issuedTokenType": TOKEN_TYPE_JWT, "tokenType": "Bearer"}
        )
    return web.json_response(
        {
            "issuedTokenType": TOKEN_TYPE_JWT,
            "tokenType": "Bearer",
            "tokens": [
                _granted(g)
                if g.error is None
                else {"audience": g.audience, **g.error.to_wire(), "status": g.error.status}
                for g in grants
            ],
        }
    )


def _granted(grant: RecipientGrant) -> dict[str, Any]:
    assert grant.claims is not None
    return {
        "audience": grant.audience,
        "accessToken": grant.token,
        "expiresIn": grant.claims.exp - grant.claims.iat,
        "expiresAt": rfc3339(dt.datetime.fromtimestamp(grant.claims.exp, dt.UTC)),
    }


async def whoami(request: web.Request) -> web.Response:
    """The caller's verified claims: the cheapest authenticated call (clients, benchmarks)."""
    claims = await request.app[AUTHORITY].authenticate(request.headers.get("Authorization"))
    return web.json_response(claims.model_dump(by_alias=True))


async def revoke(request: web.Request) -> web.Response:
    authority = request.app[AUTHORITY]
    claims = await authority.authenticate(request.headers.get("Authorization"))
    body = await parse_body(request, RevocationRequest)
    actor = f"{claims.namespace}/{claims.sub}"
    if body.agent is not None:
        authority.authorize(claims, MeshCall.REVOKE_TOKENS, body.agent.namespace)
        if body.before is not None and body.before > authority.clock.now():
            raise ValidationError("before must not be in the future", field="before")
        moment = await authority.revoke_agent(
            body.agent.namespace, body.agent.agent_id, actor, body.before
        )
        return web.json_response(
            {"revoked": {"agent": body.agent.model_dump(by_alias=True), "before": rfc3339(moment)}}
        )
    assert body.jti is not None
    namespace = body.namespace or claims.namespace
    authority.authorize(claims, MeshCall.REVOKE_TOKENS, namespace)
    await authority.revoke_token(body.jti, actor, namespace=namespace)
    return web.json_response({"revoked": {"jti": body.jti, "namespace": namespace}})


async def audit(request: web.Request) -> web.Response:
    authority = request.app[AUTHORITY]
    claims = await authority.authenticate(request.headers.get("Authorization"))
    namespace = request.query.get("namespace", claims.namespace)
    if not is_dns_label(namespace):
        raise ValidationError(f"namespace {namespace!r} is not a namespace name", field="namespace")
    authority.authorize(claims, MeshCall.READ_AUDIT, namespace)
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise ValidationError("limit must be an integer", field="limit") from None
    if not 1 <= limit <= 1000:
        raise ValidationError("limit must be between 1 and 1000", field="limit")
    records = authority.audit.recent(
        event=request.query.get("event"), namespace=namespace, limit=limit
    )
    return web.json_response({"items": records})


async def acl_in_force(request: web.Request) -> web.Response:
    """`GET /v1/acl/{namespace}`: the ACLPolicies in force there, so agents enforce the
    same rules the operator does. Readable by the namespace's own agents (they need it to
    check their callers) and by whoever may `read acl` there. `admitted` is the callers'
    side of the calls the namespace admits: the policies in force for each admitted type
    in the namespace admitted (without their own admit rules)."""
    authority = request.app[AUTHORITY]
    claims = await authority.authenticate(request.headers.get("Authorization"))
    namespace = request.match_info["namespace"]
    if claims.namespace != namespace:
        authority.authorize(claims, MeshCall.READ_POLICIES, namespace)
    policies = authority.policies
    return web.json_response(
        {
            "namespace": namespace,
            "policies": [
                {"name": name, "spec": policy_to_spec(policy)}
                for name, policy in policies.in_force(namespace)
            ],
            "admitted": [
                {"namespace": ns, "name": name, "spec": policy_to_spec(replace(policy, admit=()))}
                for ns, name, policy in policies.admitted_policies(namespace)
            ],
        },
        headers={"Cache-Control": "private, max-age=30"},
    )


async def revocations(request: web.Request) -> web.Response:
    """`GET /v1/revocations`: the revocations an agent verifying tokens itself needs, those
    of the tokens that can reach it: of its own namespace and of the namespaces the
    policies in force there admit (`namespaces` lists them). Entries are opaque jtis and
    agent ids with times, nothing secret, but another namespace's are not the caller's."""
    authority = request.app[AUTHORITY]
    claims = await authority.authenticate(request.headers.get("Authorization"))
    namespaces = {claims.namespace} | authority.policies.admitted_namespaces(claims.namespace)
    answer = authority.revocations.for_namespaces(namespaces).to_wire()
    answer["namespaces"] = sorted(namespaces)
    return web.json_response(answer, headers={"Cache-Control": "private, max-age=30"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/.well-known/jwks.json", jwks)
    app.router.add_post("/v1/token", issue_token)
    app.router.add_get("/v1/whoami", whoami)
    app.router.add_post("/v1/revocations", revoke)
    app.router.add_get("/v1/revocations", revocations)
    app.router.add_get("/v1/acl/{namespace}", acl_in_force)
    app.router.add_get("/v1/audit", audit)
