"""Mesh JWTs: issue them, and verify them the RFC 8725 way.

The verifier trusts nothing in the token before the signature is checked with a key of
ours whose algorithm is pinned in code: `typ` must be ours, `alg` must equal the key's,
`kid` is a lookup in our ring (never a path or URL), `jku`/`x5u`/`jwk`/`x5c` are ignored.
Time comes from the injected clock, so expiry is testable without sleeping.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import jwt
from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError
from pydantic.alias_generators import to_camel

from agent_mesh.auth.keys import ALGORITHMS, KeyRing
from agent_mesh.domain.clock import Clock, rfc3339
from agent_mesh.domain.errors import AuthError

TOKEN_TYPE: Final = "agent-mesh+jwt"  # noqa: S105  (the JWT typ header)
ISSUER: Final = "agent-mesh"
AUDIENCE: Final = "agent-mesh"
"""The default audience of tokens for the operator's mesh API (`token_audience`)."""
GRANT_TOKEN_EXCHANGE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105
"""`grantType` of a token exchange at `POST /v1/token` (RFC 8693)."""
TOKEN_TYPE_JWT: Final = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105
EXCHANGE_MAX_AUDIENCES: Final = 256
"""Recipients per token exchange (a broadcast to more asks in several batches)."""
REQUIRED_CLAIMS: Final = ("exp", "iat", "nbf", "iss", "aud", "sub", "jti")
MESH_CLAIMS: Final = ("agentType", "namespace", "agentUid")
DEFAULT_CACHE_SIZE: Final = 16_384

KeyRingProvider = Callable[[], KeyRing]


class VerifyingKeyLike(Protocol):
    @property
    def kid(self) -> str: ...
    @property
    def algorithm(self) -> str: ...
    @property
    def public_key(self) -> Any: ...


class VerifyingKeys(Protocol):
    """What verification needs: the operator's KeyRing, or an agent's PublicKeySet."""

    def key_for(self, kid: object) -> VerifyingKeyLike | None: ...


VerifyingKeysProvider = Callable[[], VerifyingKeys]


class Revocations(Protocol):
    """What verification asks of the revocations (auth.revocation.RevocationList has it)."""

    def is_revoked(self, claims: MeshClaims) -> bool: ...


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who a token speaks for, taken from the MeshAgent (never from the request)."""

    agent_id: str
    agent_type: str
    namespace: str
    capabilities: tuple[str, ...]
    uid: str


def recipient_audience(namespace: str, agent_id: str) -> str:
    """The `aud` of a token for a call to one agent: `<namespace>/<agentId>`."""
    return f"{namespace}/{agent_id}"


class MeshClaims(BaseModel):
    """The verified claims of a mesh token (camelCase on the wire)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    sub: str
    agent_type: str
    namespace: str
    capabilities: list[str]
    agent_uid: str
    iat: int
    nbf: int
    exp: int
    jti: str
    iss: str
    aud: str

    @property
    def identity(self) -> AgentIdentity:
        return AgentIdentity(
            self.sub, self.agent_type, self.namespace, tuple(self.capabilities), self.agent_uid
        )


class TokenIssuer:
    """Signs mesh tokens with the ring's active key."""

    def __init__(
        self,
        keyring_provider: KeyRingProvider,
        clock: Clock,
        *,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        lifetime: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        self._keyring = keyring_provider
        self._clock = clock
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime

    def issue(
        self,
        identity: AgentIdentity,
        *,
        audience: str | None = None,
        lifetime: dt.timedelta | None = None,
    ) -> tuple[str, MeshClaims]:
        """A token for `identity`, for `audience` (default: the mesh API's), valid for
        `lifetime` (default: the issuer's)."""
        key = self._keyring().active
        now = int(self._clock.now().timestamp())
        seconds = int((self.lifetime if lifetime is None else lifetime).total_seconds())
        claims = MeshClaims(
            sub=identity.agent_id,
            agent_type=identity.agent_type,
            namespace=identity.namespace,
            capabilities=list(identity.capabilities),
            agent_uid=identity.uid,
            iat=now,
            nbf=now,
            exp=now + seconds,
            jti=uuid.uuid4().hex,
            iss=self.issuer,
            aud=self.audience if audience is None else audience,
        )
        token = jwt.encode(
            claims.model_dump(by_alias=True),
            key.private_key,
            algorithm=key.algorithm,
            headers={"typ": TOKEN_TYPE, "kid": key.kid},
        )
        return token, claims


_URLSAFE: Final = bytes.maketrans(b"-_", b"+/")


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, only to pick our key; PyJWT re-parses everything strictly after.

    Parsed here rather than with jwt.get_unverified_header, which validates the whole
    token character by character a second time (measured: a third of a verification).
    """
    head, dot, _ = token.partition(".")
    try:
        if not dot or len(head) > 1024:
            raise ValueError("not a compact JWS")
        raw = base64.b64decode(
            head.encode().translate(_URLSAFE) + b"=" * (-len(head) % 4), validate=True
        )
        header = json.loads(raw)
    except (ValueError, UnicodeError, binascii.Error) as error:
        raise AuthError(f"token is not a valid JWS: {error}", code="TokenMalformed") from None
    if not isinstance(header, dict):
        raise AuthError("token header is not a JSON object", code="TokenMalformed")
    return header


class TokenVerifier:
    """Verifies mesh tokens; every refusal is an AuthError with a stable code."""

    def __init__(
        self,
        keyring_provider: VerifyingKeysProvider,
        clock: Clock,
        revocations: Revocations,
        *,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        leeway: dt.timedelta = dt.timedelta(seconds=30),
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._keyring = keyring_provider
        self._clock = clock
        self._revocations = revocations
        self.issuer = issuer
        self.audience = audience
        self._leeway = leeway.total_seconds()
        self._cache_size = cache_size
        # token string → (claims, kid): a repeat skips the signature, not the other checks
        self._cache: dict[str, tuple[MeshClaims, str]] = {}

    def verify(self, token: str) -> MeshClaims:
        """The token's claims if every rule holds; an AuthError with a stable code if not."""
        now = self._clock.now()
        cached = self._cache.get(token)
        if cached is None:
            claims, kid = self._verify_signed(token, now)
            self._check_current(claims, now)
            if self._cache_size > 0:
                if len(self._cache) >= self._cache_size:
                    del self._cache[next(iter(self._cache))]  # the oldest entry
                self._cache[token] = (claims, kid)
            return claims
        claims, kid = cached
        try:
            # a cache hit skips only the signature: the key, time and revocation still count
            self._key(kid, now)
            self._check_current(claims, now)
        except AuthError:
            del self._cache[token]
            raise
        return claims

    def _key(self, kid: object, now: dt.datetime) -> VerifyingKeyLike:
        """The verifying key for `kid`: a lookup in the ring, and not past its retirement."""
        key = self._keyring().key_for(kid)
        if key is None:
            raise AuthError(
                "token kid is not one of the mesh's signing keys", field="kid", code="UnknownKey"
            )
        # a ring not yet pruned may still hold a retired key; it must not verify any more
        retire_at: dt.datetime | None = getattr(key, "retire_at", None)
        if retire_at is not None and retire_at <= now:
            raise AuthError(
                f"token kid {key.kid} was rotated out at {rfc3339(retire_at)}",
                field="kid",
                code="UnknownKey",
            )
        return key

    def _check_current(self, claims: MeshClaims, now: dt.datetime) -> None:
        self._check_time(claims, now)
        if self._revocations.is_revoked(claims):
            raise AuthError(
                f"token {claims.jti} of agent {claims.namespace}/{claims.sub} is revoked",
                field="jti",
                code="TokenRevoked",
            )

    def _verify_signed(self, token: str, now: dt.datetime) -> tuple[MeshClaims, str]:
        header = _unverified_header(token)
        if header.get("typ") != TOKEN_TYPE:
            raise AuthError(
                f"token header typ must be {TOKEN_TYPE!r}, got {header.get('typ')!r}",
                field="typ",
                code="TokenTypeInvalid",
            )
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthError(
                f"token alg {alg!r} is not allowed: only {', '.join(ALGORITHMS)}",
                field="alg",
                code="AlgorithmNotAllowed",
            )
        key = self._key(header.get("kid"), now)
        if alg != key.algorithm:
            raise AuthError(
                f"token alg {alg} does not match key {key.kid} ({key.algorithm})",
                field="alg",
                code="AlgorithmNotAllowed",
            )
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key.public_key,
                algorithms=[key.algorithm],
                issuer=self.issuer,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_aud": False,  # checked below, naming the audience it was for
                    "verify_exp": False,  # checked against the injected clock below
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.MissingRequiredClaimError as error:
            raise AuthError(
                f"token lacks the {error.claim} claim", field=error.claim, code="ClaimMissing"
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthError(
                f"token iss is not {self.issuer!r}", field="iss", code="IssuerInvalid"
            ) from None
        except jwt.InvalidSignatureError:
            raise AuthError(
                "token signature does not verify", field="signature", code="SignatureInvalid"
            ) from None
        except jwt.PyJWTError as error:
            raise AuthError(f"token is invalid: {error}", code="TokenMalformed") from None
        if payload["aud"] != self.audience:
            raise wrong_audience(payload["aud"], self.audience)
        for claim in MESH_CLAIMS:
            if not isinstance(payload.get(claim), str) or not payload[claim]:
                raise AuthError(f"token lacks the {claim} claim", field=claim, code="ClaimMissing")
        try:
            claims = MeshClaims.model_validate(payload)
        except PydanticValidationError as error:
            first = error.errors()[0]
            claim = ".".join(str(part) for part in first["loc"]) or "claims"
            if first["type"] == "missing":
                raise AuthError(
                    f"token lacks the {claim} claim", field=claim, code="ClaimMissing"
                ) from None
            raise AuthError(
                f"token claim {claim} is malformed: {first['msg']}",
                field=claim,
                code="TokenMalformed",
            ) from None
        return claims, key.kid

    def _check_time(self, claims: MeshClaims, moment: dt.datetime) -> None:
        now = moment.timestamp()
        if now > claims.exp + self._leeway:
            raise AuthError("token has expired", field="exp", code="TokenExpired")
        if now + self._leeway < claims.nbf:
            raise AuthError("token is not valid yet", field="nbf", code="TokenNotYetValid")
        if now + self._leeway < claims.iat:
            raise AuthError("token was issued in the future", field="iat", code="TokenNotYetValid")


def wrong_audience(aud: object, expected: str, field: str = "aud") -> AuthError:
    """The refusal of a token addressed to someone else (RFC 8725 §3.9: no forwarding)."""
    shown = repr(aud)[:80]
    return AuthError(
        f"token is addressed to {shown}, not to {expected!r}: a mesh token is good only for "
        "its own audience (the mesh API, or the one agent it was issued for)",
        field=field,
        code="WrongAudience",
    )


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; AuthError otherwise."""
    if not authorization:
        raise AuthError(
            "missing Authorization header: send 'Authorization: Bearer <mesh token>'",
            field="Authorization",
            code="TokenMissing",
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(
            "Authorization header must be 'Bearer <mesh token>'",
            field="Authorization",
            code="TokenMalformed",
        )
    return token.strip()
