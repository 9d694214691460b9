"""The operator's authority: who a caller is (tokens), what it may do (ACL), and the
state behind both (signing keys, revocations), kept in the cluster through small stores.

Mesh routes call `authenticate` and then `authorize` (or `require_self`); the token
endpoint calls the `exchange_*` methods. Every decision is audited and counted.

A token is good for one audience: the mesh API's (what agents get for their credential)
or one agent's, `<namespace>/<agentId>` (what an agent gets by token exchange to call a
peer, and what the operator mints for its own calls to agents), so a token that reaches
an agent is worth nothing anywhere else.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from agent_mesh.auth.audit import AuditLog
from agent_mesh.auth.keys import Algorithm, KeyRing
from agent_mesh.auth.pod_bindings import PodBindings
from agent_mesh.auth.revocation import RevocationList
from agent_mesh.auth.tokens import (
    AgentIdentity,
    MeshClaims,
    TokenIssuer,
    TokenVerifier,
    bearer_token,
    recipient_audience,
)
from agent_mesh.domain.acl import OPERATOR_AGENT_TYPE, OPERATOR_SUBJECT, MeshCall, PolicyIndex
from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.clock import Clock, rfc3339
from agent_mesh.domain.errors import (
    AuthError,
    ForbiddenError,
    MeshError,
    UnavailableError,
    ValidationError,
)
from agent_mesh.observability.metrics import AUTH_DECISIONS, TOKENS_ISSUED, TOKENS_VERIFIED

logger = logging.getLogger("agent_mesh.auth")

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
_VERIFIED_OK = TOKENS_VERIFIED.labels(result="ok")  # the hot path: no label lookup per call
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
OPERATOR_TOKEN_MIN_LEFT: Final = 15.0
"""An operator token is reused only while it has this long (or half what the caller asked
for, if less) left: enough to cross the network and be checked on arrival."""
OPERATOR_TOKENS_PER_RECIPIENT: Final = 4
"""Tokens kept per recipient (calls asking for different lifetimes each find one)."""
OPERATOR_TOKEN_CACHE_MAX: Final = 65_536
"""Recipients with cached operator tokens; the cache is cleared past this (memory bound)."""


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Token and key policy (from the operator config)."""

    issuer: str = "agent-mesh"
    audience: str = "agent-mesh"
    token_lifetime: dt.timedelta = dt.timedelta(hours=1)
    leeway: dt.timedelta = dt.timedelta(seconds=30)
    key_algorithm: Algorithm = "ES256"
    rotation_interval: dt.timedelta = dt.timedelta(days=7)
    key_overlap: dt.timedelta = dt.timedelta(hours=1, seconds=30)
    service_account_audience: str = "agent-mesh"
    recipient_token_lifetime: dt.timedelta = dt.timedelta(minutes=5)
    """Lifetime of the tokens an agent gets by exchange for calling one peer."""
    dispatch_token_margin: dt.timedelta = dt.timedelta(seconds=10)
    """The operator's task-dispatch token expires at most this long after the attempt's
    deadline."""
    broadcast_token_lifetime: dt.timedelta = dt.timedelta(seconds=60)
    """Lifetime of the operator's tokens for events (agent.health)."""
    audit_allowed: bool = True
    """Audit allowed decisions too (denials always are); off trims hot-path logging."""


@dataclass(frozen=True, slots=True)
class RecipientGrant:
    """One recipient's share of a token exchange: its token, or why there is none."""

    audience: str
    token: str | None = None
    claims: MeshClaims | None = None
    error: MeshError | None = None


@dataclass(frozen=True, slots=True)
class ReviewedToken:
    """What a TokenReview said about a ServiceAccount token."""

    username: str
    extra: dict[str, list[str]]


class KeyStore(Protocol):
    rotation_requested: str | None
    """Set by `load` when someone asked for a rotation that has not happened yet."""

    async def load(self) -> KeyRing | None: ...
    async def save(self, ring: KeyRing) -> KeyRing:
        """Store `ring` unless another writer changed the keys since this store last
        read or wrote them; returns what is stored (`ring`, or the other writer's)."""
        ...


class RevocationStore(Protocol):
    async def load(self) -> RevocationList: ...
    async def save(self, revocations: RevocationList, now: dt.datetime) -> RevocationList:
        """Persist the union with other writers' entries, less those expired at `now`;
        returns what is stored."""
        ...


class TokenReviewer(Protocol):
    async def review(self, token: str, audience: str) -> ReviewedToken:
        """Raise AuthError when the apiserver does not authenticate the token."""
        ...

    async def pod_agent_label(self, namespace: str, pod: str) -> str | None: ...

    async def pod_ip(self, namespace: str, pod: str) -> str | None:
        """The pod's status.podIP (None: no such pod, or no IP yet)."""
        ...


AgentFetcher = Callable[[str, str], Awaitable[AgentRecord | None]]


def credential_hash(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


RETIRED_CREDENTIALS_KEPT = 8
"""Rotated-out credential hashes remembered per agent (each refused at once)."""


class Authority:
    """Issues, verifies and revokes mesh tokens and makes ACL decisions."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        registry: AgentRegistry,
        policies: PolicyIndex,
        keys: KeyStore,
        revocation_store: RevocationStore,
        reviewer: TokenReviewer,
        fetch_agent: AgentFetcher,
        audit: AuditLog,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.policies = policies
        self.audit = audit
        self._keys = keys
        self._revocation_store = revocation_store
        self._reviewer = reviewer
        self._fetch_agent = fetch_agent
        self._clock = clock
        self.clock = clock
        self._ring: KeyRing | None = None
        self._lock = asyncio.Lock()
        self.revocations = RevocationList()
        # (namespace, agentId) → hashes of credentials rotated out, refused even while a
        # watch event older than the rotation still shows one in the registry
        self._retired: dict[tuple[str, str], list[str]] = {}
        # recipient audience → [(token, exp)]: the operator's own tokens, reused per agent
        self._operator_tokens: dict[str, list[tuple[str, int]]] = {}
        self.issue_limit: Callable[[str, str], None] | None = None
        """Called with (namespace, agentId) before a token is signed for a proven agent;
        raises to refuse (the mesh API's per-agent rate limit)."""
        self.pods = PodBindings()
        self.issuer = TokenIssuer(
            self.keyring,
            clock,
            issuer=settings.issuer,
            audience=settings.audience,
            lifetime=settings.token_lifetime,
        )
        self.verifier = TokenVerifier(
            self.keyring,
            clock,
            self.revocations,
            issuer=settings.issuer,
            audience=settings.audience,
            leeway=settings.leeway,
        )

    # --- state ---------------------------------------------------------------------------

    def keyring(self) -> KeyRing:
        if self._ring is None:
            raise UnavailableError("signing keys are not loaded yet", code="KeysNotLoaded")
        return self._ring

    @property
    def ready(self) -> bool:
        return self._ring is not None

    async def start(self) -> None:
        """Load keys (creating the first on a fresh cluster) and revocations."""
        now = self._clock.now()
        ring = await self._keys.load()
        if ring is None:
            ring = await self._keys.save(KeyRing.generate(self.settings.key_algorithm, now))
            logger.info("signing with key %s (new, or another operator's)", ring.active.kid)
        self._ring = ring
        self.revocations.merge(await self._revocation_store.load())
        await self._adopt_revocations(now)
        await self.rotate_if_due()

    async def maintain_keys(self) -> None:
        """Periodic: adopt keys another writer stored, rotate when due or requested."""
        stored = await self._keys.load()
        if stored is not None and set(stored.verifying) != set(self.keyring().verifying):
            self._ring = stored
            logger.info("adopted signing keys from the key store (active %s)", stored.active.kid)
        if self._keys.rotation_requested is not None:
            await self.rotate_keys(reason="requested", actor="key Secret annotation")
            return
        await self.rotate_if_due()

    async def rotate_if_due(self) -> bool:
        """Rotate when the active key is older than the interval; drop retired keys."""
        ring = self.keyring()
        now = self._clock.now()
        if ring.needs_rotation(now, self.settings.rotation_interval):
            await self.rotate_keys(reason="schedule")
            return True
        pruned = ring.prune(now)
        if set(pruned.verifying) != set(ring.verifying):
            self._ring = await self._keys.save(pruned)
        return False

    async def rotate_keys(self, reason: str, actor: str = "operator") -> KeyRing:
        """New active key now; the previous one verifies for the overlap window."""
        async with self._lock:
            old = self.keyring()
            # another operator may have rotated first: then its ring is stored and adopted
            ring = await self._keys.save(old.rotate(self._clock.now(), self.settings.key_overlap))
            self._ring = ring
        self.audit.record(
            "keys.rotated",
            f"signing key rotated ({reason})",
            actor=actor,
            reason=reason,
            kid=ring.active.kid,
            previousKid=old.active.kid,
        )
        return ring

    # --- authentication ------------------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> MeshClaims:
        """The verified claims of a `Bearer` header, bound to an existing MeshAgent."""
        try:
            token = bearer_token(authorization)
            claims = self.verifier.verify(token)
            await self._bound_agent(claims)
        except AuthError as error:
            TOKENS_VERIFIED.labels(result=error.code).inc()
            self.audit.record(
                "token.rejected",
                f"mesh token rejected: {error.message}",
                code=error.code,
                reason=error.message,
            )
            raise
        _VERIFIED_OK.inc()
        return claims

    async def _bound_agent(self, claims: MeshClaims) -> AgentRecord:
        agent = await self.find_agent(claims.namespace, claims.sub)
        if agent is None or agent.uid != claims.agent_uid:
            raise AuthError(
                f"token subject {claims.namespace}/{claims.sub} is not a registered MeshAgent "
                "(deleted, or re-created since the token was issued)",
                field="sub",
                code="AgentUnknown",
            )
        return agent

    async def find_agent(self, namespace: str, agent_id: str) -> AgentRecord | None:
        """From the watch-fed registry; asks the apiserver on a miss (start-up, races)."""
        agent = self.registry.get(namespace, agent_id)
        if agent is None:
            agent = await self._fetch_agent(namespace, agent_id)
            if agent is not None:
                self.registry.upsert(agent)
        return agent

    # --- authorization -------------------------------------------------------------------

    def authorize(
        self, claims: MeshClaims, call: MeshCall, target_namespace: str | None = None
    ) -> None:
        """Raise ForbiddenError unless the ACL lets the caller make `call`."""
        target = target_namespace or claims.namespace
        decision = self.policies.decide(
            claims.agent_type, claims.namespace, call.action, call.resource, target
        )
        verdict = "allow" if decision.allowed else "deny"
        AUTH_DECISIONS.labels(decision=verdict).inc()
        if decision.allowed and not self.settings.audit_allowed:
            return
        self._audit_decision(
            claims,
            verdict,
            call.action.value,
            call.resource,
            target,
            decision.source,
            decision.reason,
        )
        if not decision.allowed:
            raise ForbiddenError(decision.reason, code="AccessDenied")

    def require_self(self, claims: MeshClaims, namespace: str, agent_id: str) -> None:
        """Calls about one agent (heartbeat, its task results) need that agent's own token."""
        if claims.namespace == namespace and claims.sub == agent_id:
            return
        AUTH_DECISIONS.labels(decision="deny").inc()
        message = (
            f"the token of agent {claims.namespace}/{claims.sub} cannot act for agent "
            f"{namespace}/{agent_id}"
        )
        self.audit_identity_denial(claims, f"agents/{agent_id}", message, namespace)
        raise ForbiddenError(message, code="NotYourAgent")

    def audit_identity_denial(
        self, claims: MeshClaims, resource: str, message: str, target_namespace: str | None = None
    ) -> None:
        """Audit a call refused because the caller is not the agent `resource` belongs to."""
        self._audit_decision(
            claims, "deny", "self", resource, target_namespace, "identity", message
        )

    def _audit_decision(
        self,
        claims: MeshClaims,
        verdict: str,
        action: str,
        resource: str,
        target_namespace: str | None,
        policy: str,
        reason: str,
    ) -> None:
        """One `acl.decision` record (runtime posts the denials as Events on the agent)."""
        target = {"targetNamespace": target_namespace} if target_namespace is not None else {}
        self.audit.record(
            "acl.decision",
            reason,
            decision=verdict,
            agentId=claims.sub,
            agentType=claims.agent_type,
            namespace=claims.namespace,
            action=action,
            resource=resource,
            **target,
            policy=policy,
            reason=reason,
        )

    # --- issuance ------------------------------------------------------------------------

    async def exchange_service_account_token(
        self, token: str, agent_id: str | None
    ) -> tuple[str, MeshClaims]:
        """A pod's projected ServiceAccount token (audience checked by TokenReview) → JWT."""
        try:
            reviewed = await self._reviewer.review(token, self.settings.service_account_audience)
            agent = await self._agent_of_service_account(reviewed, agent_id)
        except MeshError as error:
            self._issue_refused("serviceAccountToken", error, agent_id)
            raise
        token, claims = self._issue(agent, "serviceAccountToken")
        await self._bind_pod(reviewed, claims)
        return token, claims

    async def _bind_pod(self, reviewed: ReviewedToken, claims: MeshClaims) -> None:
        """Remember the IP of the pod the token went to (a heartbeat may report only
        that as its endpoint). No pod, or no IP: nothing is bound."""
        pods = reviewed.extra.get(POD_NAME_EXTRA) or []
        if not pods:
            return
        try:
            ip = await self._reviewer.pod_ip(claims.namespace, pods[0])
        except MeshError as error:
            logger.warning("pod %s/%s: IP not known: %s", claims.namespace, pods[0], error)
            return
        if ip:
            now = int(self._clock.now().timestamp())
            self.pods.bind(claims.jti, ip, claims.exp, now)

    def pod_ip_of(self, claims: MeshClaims) -> str | None:
        """The IP of the pod the token was issued to, if it was issued to a pod."""
        return self.pods.pod_ip(claims.jti, int(self._clock.now().timestamp()))

    async def _agent_of_service_account(
        self, reviewed: ReviewedToken, agent_id: str | None
    ) -> AgentRecord:
        if not reviewed.username.startswith(SERVICE_ACCOUNT_PREFIX):
            raise AuthError(
                f"serviceAccountToken authenticates {reviewed.username}, not a ServiceAccount",
                field="serviceAccountToken",
                code="NotAServiceAccount",
            )
        namespace, _, account = reviewed.username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(
            ":"
        )
        pods = reviewed.extra.get(POD_NAME_EXTRA) or []
        if pods:
            label = await self._reviewer.pod_agent_label(namespace, pods[0])
            if label:
                agent = self.registry.by_name(namespace, label)
                if agent is None:  # created a moment ago: the watch may not have it yet
                    found = await self.find_agent(namespace, label)
                    agent = found if found is not None and found.name == label else None
                if agent is None:
                    raise AuthError(
                        f"pod {namespace}/{pods[0]} is labelled agentmesh.io/agent={label}, "
                        "but no such MeshAgent exists",
                        field="serviceAccountToken",
                        code="AgentUnknown",
                    )
                _label_may_select(agent, account, pods[0])
                if agent_id is not None and agent_id != agent.agent_id:
                    raise ForbiddenError(
                        f"pod {namespace}/{pods[0]} runs agent {agent.agent_id}, not {agent_id}",
                        field="agentId",
                        code="NotYourAgent",
                    )
                return agent
        bound = self.registry.with_service_account(namespace, account)
        if agent_id is not None:
            bound = [a for a in bound if a.agent_id == agent_id]
        if len(bound) == 1:
            return bound[0]
        if not bound:
            raise ForbiddenError(
                f"ServiceAccount {namespace}/{account} is not bound to "
                f"{'agent ' + agent_id if agent_id else 'any MeshAgent'}: label the pod "
                "agentmesh.io/agent=<MeshAgent name> or run it with the agent's workload "
                "serviceAccountName",
                field="serviceAccountToken",
                code="NotBoundToAgent",
            )
        raise ForbiddenError(
            f"ServiceAccount {namespace}/{account} runs {len(bound)} agents: name one in agentId",
            field="agentId",
            code="AmbiguousAgent",
        )

    async def exchange_credential(
        self, namespace: str, agent_id: str, credential: str
    ) -> tuple[str, MeshClaims]:
        """An external agent's credential (from the Secret the operator made) → JWT."""
        agent = await self.find_agent(namespace, agent_id)
        presented = credential_hash(credential)
        if (
            agent is not None
            and agent.external
            and (
                agent.credential_hash is None
                or not hmac.compare_digest(agent.credential_hash, presented)
            )
        ):
            # The registry can lag the apiserver: a credential just issued whose hash the
            # watch has not brought yet, or a stale watch event that put an older copy
            # back. Ask the apiserver once before refusing (failed attempts are rate
            # limited by the abuse guard, so this cannot be used to flood it).
            fresh = await self._fetch_agent(namespace, agent_id)
            if fresh is not None and fresh.credential_hash not in (None, agent.credential_hash):
                self.registry.upsert(fresh)
                agent = fresh
        retired = self._retired.get((namespace, agent_id), ())
        if (
            agent is None
            or agent.credential_hash is None
            or not hmac.compare_digest(agent.credential_hash, presented)
            or any(hmac.compare_digest(old, presented) for old in retired)
        ):
            # One answer for unknown agent and wrong credential: no probing for agent names.
            error = AuthError(
                f"credential for agent {namespace}/{agent_id} is not valid",
                field="credential",
                code="CredentialInvalid",
            )
            self._issue_refused("credential", error, agent_id, namespace)
            raise error
        return self._issue(agent, "credential")

    def _issue(self, agent: AgentRecord, method: str) -> tuple[str, MeshClaims]:
        self._check_issuable(agent, method)
        identity = AgentIdentity(
            agent_id=agent.agent_id,
            agent_type=agent.agent_type,
            namespace=agent.namespace,
            capabilities=agent.capabilities,
            uid=agent.uid,
        )
        token, claims = self.issuer.issue(identity)
        TOKENS_ISSUED.labels(method=method).inc()
        self.audit.record(
            "token.issued",
            f"mesh token issued to {agent.ref}",
            method=method,
            agentId=agent.agent_id,
            agentType=agent.agent_type,
            namespace=agent.namespace,
            jti=claims.jti,
            expiresAt=claims.exp,
        )
        return token, claims

    def _check_issuable(self, agent: AgentRecord, method: str) -> None:
        if agent.agent_id == OPERATOR_SUBJECT:  # a MeshAgent from before the CRD's rule
            error = ForbiddenError(
                f"agentId {OPERATOR_SUBJECT} is reserved for the operator's own identity: "
                f"MeshAgent {agent.namespace}/{agent.name} gets no token",
                field="agentId",
                code="ReservedAgentId",
            )
            self._issue_refused(method, error, agent.agent_id, agent.namespace)
            raise error
        if self.issue_limit is not None:
            self.issue_limit(agent.namespace, agent.agent_id)  # audited by the limiter

    async def exchange_for_recipients(
        self, subject_token: str, audiences: Sequence[str]
    ) -> list[RecipientGrant]:
        """Token exchange (RFC 8693 in shape): the caller's mesh-API token → one token per
        recipient agent (`<namespace>/<agentId>`), carrying the caller's identity, valid
        for the recipient-token lifetime (never past the subject token's own expiry).

        The subject must be a valid mesh-API token of an existing agent: a token addressed
        to an agent cannot be exchanged again (no chaining). A recipient that is not a
        MeshAgent gets an error of its own. Whether the caller may reach the recipient is
        the recipient's ACL's decision, not the exchange's."""
        try:
            subject = await self._exchange_subject(subject_token)
        except MeshError as error:
            self._issue_refused("tokenExchange", error, None)
            raise
        now = int(self._clock.now().timestamp())
        lifetime = dt.timedelta(
            seconds=max(
                1, min(self.settings.recipient_token_lifetime.total_seconds(), subject.exp - now)
            )
        )
        identity = subject.identity
        grants: list[RecipientGrant] = []
        for index, audience in enumerate(audiences):
            field = "audience" if len(audiences) == 1 else f"audiences[{index}]"
            namespace, slash, agent_id = audience.partition("/")
            if not (slash and namespace and agent_id and "/" not in agent_id):
                recipient = None
            elif len(audiences) == 1:  # may be newer than the watch: ask the apiserver
                recipient = await self.find_agent(namespace, agent_id)
            else:  # a batch comes from discovery, which is the registry: no apiserver storm
                recipient = self.registry.get(namespace, agent_id)
            if recipient is None:
                grants.append(
                    RecipientGrant(
                        audience,
                        error=ValidationError(
                            f"{field} {audience!r} is not a registered MeshAgent "
                            "(<namespace>/<agentId>): tokens are issued only for agents "
                            "that exist",
                            field=field,
                            code="RecipientUnknown",
                        ),
                    )
                )
                continue
            token, claims = self.issuer.issue(
                identity,
                audience=recipient_audience(recipient.namespace, recipient.agent_id),
                lifetime=lifetime,
            )
            grants.append(RecipientGrant(audience, token, claims))
        issued = [g for g in grants if g.claims is not None]
        TOKENS_ISSUED.labels(method="tokenExchange").inc(len(issued))
        self.audit.record(
            "token.exchanged",
            f"{len(issued)} recipient token(s) issued to {subject.namespace}/{subject.sub}",
            method="tokenExchange",
            agentId=subject.sub,
            agentType=subject.agent_type,
            namespace=subject.namespace,
            subjectJti=subject.jti,
            audiences=[g.audience for g in issued],
            refused=[g.audience for g in grants if g.error is not None],
            expiresAt=issued[0].claims.exp if issued and issued[0].claims else None,
        )
        return grants

    async def _exchange_subject(self, subject_token: str) -> MeshClaims:
        """The claims of a subject token that may be exchanged; AuthError naming
        `subjectToken` otherwise."""
        try:
            claims = self.verifier.verify(subject_token)
            await self._bound_agent(claims)
        except AuthError as error:
            TOKENS_VERIFIED.labels(result=error.code).inc()
            if error.code == "WrongAudience":
                raise AuthError(
                    "subjectToken is not a mesh-API token (aud "
                    f"{self.settings.audience!r}): a token addressed to an agent cannot be "
                    "exchanged again",
                    field="subjectToken",
                    code="WrongAudience",
                ) from None
            raise AuthError(
                f"subjectToken: {error.message}", field="subjectToken", code=error.code
            ) from None
        _VERIFIED_OK.inc()
        return claims

    def operator_token(self, namespace: str, agent_id: str, seconds: float) -> str:
        """The operator's own token for calls to agent `namespace/agent_id` (task
        dispatch, events): subject agent-mesh-operator, reserved type mesh-operator, aud
        that agent, namespace claim its namespace. It expires within `seconds` (at most the
        token lifetime); a token minted earlier for the same agent is reused when it still
        has OPERATOR_TOKEN_MIN_LEFT (or half of `seconds`) left and expires within
        `seconds` too, so no call carries a token that outlives what it asked for."""
        seconds = min(seconds, self.settings.token_lifetime.total_seconds())
        now = self._clock.now().timestamp()
        floor = now + min(OPERATOR_TOKEN_MIN_LEFT, seconds / 2)
        ceiling = now + seconds
        audience = recipient_audience(namespace, agent_id)
        held = self._operator_tokens.get(audience)
        if held is not None:
            for token, exp in held:
                if floor <= exp <= ceiling:
                    return token
        identity = AgentIdentity(
            agent_id=OPERATOR_SUBJECT,
            agent_type=OPERATOR_AGENT_TYPE,
            namespace=namespace,
            capabilities=(),
            uid=OPERATOR_SUBJECT,
        )
        lifetime = dt.timedelta(seconds=max(1, int(seconds)))
        token, claims = self.issuer.issue(identity, audience=audience, lifetime=lifetime)
        TOKENS_ISSUED.labels(method="operator").inc()
        self.audit.record(
            "token.issued",
            f"operator token issued for agent {audience}",
            method="operator",
            agentId=OPERATOR_SUBJECT,
            namespace=namespace,
            audience=audience,
            jti=claims.jti,
            expiresAt=claims.exp,
        )
        if held is None:
            if len(self._operator_tokens) >= OPERATOR_TOKEN_CACHE_MAX:
                self._operator_tokens.clear()
            held = self._operator_tokens[audience] = []
        held[:] = [entry for entry in held if entry[1] > now]
        if len(held) >= OPERATOR_TOKENS_PER_RECIPIENT:
            held.remove(min(held, key=lambda entry: entry[1]))
        held.append((token, claims.exp))
        return token

    def _issue_refused(
        self, method: str, error: MeshError, agent_id: str | None, namespace: str | None = None
    ) -> None:
        self.audit.record(
            "token.refused",
            f"token exchange refused: {error.message}",
            method=method,
            code=error.code,
            agentId=agent_id,
            namespace=namespace,
        )

    def retire_credential(self, namespace: str, agent_id: str, sha256: str) -> None:
        """Refuse the credential with hash `sha256` from now on (it was rotated out). Kept
        in memory only: after a restart the registry is built from current status."""
        retired = self._retired.setdefault((namespace, agent_id), [])
        if sha256 not in retired:
            retired.append(sha256)
            del retired[:-RETIRED_CREDENTIALS_KEPT]

    # --- revocation ----------------------------------------------------------------------

    async def revoke_token(self, jti: str, actor: str, *, namespace: str) -> None:
        """Revoke token `jti` of `namespace` (a token of another namespace with the same
        jti is not touched); kept until any token with that jti would have expired anyway."""
        self.revocations.revoke_token(jti, self._revocation_expiry(self._clock.now()), namespace)
        await self._persist_revocations()
        self.audit.record(
            "token.revoked",
            f"token {jti} of namespace {namespace} revoked",
            actor=actor,
            jti=jti,
            namespace=namespace,
        )

    async def revoke_agent(
        self, namespace: str, agent_id: str, actor: str, before: dt.datetime | None = None
    ) -> dt.datetime:
        """Revoke every token of the agent issued before `before` (default: now)."""
        moment = before or self._clock.now()
        self.revocations.revoke_agent(namespace, agent_id, moment, self._revocation_expiry(moment))
        await self._persist_revocations()
        self.audit.record(
            "agent.tokens_revoked",
            f"tokens of agent {namespace}/{agent_id} issued before {rfc3339(moment)} revoked",
            actor=actor,
            agentId=agent_id,
            namespace=namespace,
            before=rfc3339(moment),
        )
        return moment

    def _revocation_expiry(self, issued_before: dt.datetime) -> dt.datetime:
        """When every token issued before `issued_before` has expired: under the current
        lifetime or a longer one tokens may still carry (so lowering it never lets a
        revocation lapse early)."""
        latest = self.revocations.latest_expiry(issued_before, self.settings.token_lifetime)
        return latest + self.settings.leeway

    async def _adopt_revocations(self, now: dt.datetime) -> None:
        """At start: track our token lifetime next to any longer one still in circulation,
        and give entries stored without an expiry one (one full lifetime from now)."""
        changed = self.revocations.track_lifetime(
            self.settings.token_lifetime, now, self.settings.leeway
        )
        settled = self.revocations.settle_unknown_expiries(self._revocation_expiry(now))
        if changed or settled:
            await self._persist_revocations()

    async def _persist_revocations(self) -> None:
        # The in-memory list already refuses the token; persistence makes it outlive us.
        now = self._clock.now()
        self.revocations.track_lifetime(self.settings.token_lifetime, now, self.settings.leeway)
        self.revocations.prune(now)
        async with self._lock:
            stored = await self._revocation_store.save(self.revocations, now)
        self.revocations.merge(stored)


def _label_may_select(agent: AgentRecord, account: str, pod: str) -> None:
    """A pod's agentmesh.io/agent label picks only an agent that runs as the pod's own
    ServiceAccount: whoever may run pods under one ServiceAccount must not be able to
    claim every other agent of the namespace by labelling a pod."""
    expected = agent.service_account
    if expected == account:
        return
    declared = (
        f"runs as ServiceAccount {expected}"
        if expected
        else "declares no ServiceAccount (spec.serviceAccountName)"
    )
    raise ForbiddenError(
        f"pod {agent.namespace}/{pod} runs as ServiceAccount {account} and is labelled "
        f"agentmesh.io/agent={agent.name}, but MeshAgent {agent.name} {declared}",
        field="serviceAccountToken",
        code="ServiceAccountMismatch",
    )
