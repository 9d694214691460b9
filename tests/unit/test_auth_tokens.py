"""Mesh JWT verification: what must be refused (each by its own test) and what must pass.

Hand-crafted tokens stand in for an attacker's: alg none, HMAC keyed with our public key,
tampered payloads, foreign keys, kid injection, embedded attacker keys.
"""

from __future__ import annotations

import base64
import builtins
import datetime as dt
import hashlib
import hmac
import json
import socket
import urllib.request
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent_mesh.auth import tokens as tokens_module
from agent_mesh.auth.keys import KeyRing
from agent_mesh.auth.revocation import RevocationList
from agent_mesh.auth.tokens import (
    TOKEN_TYPE,
    AgentIdentity,
    MeshClaims,
    TokenIssuer,
    TokenVerifier,
    recipient_audience,
)
from agent_mesh.domain.clock import FakeClock
from agent_mesh.domain.errors import AuthError

IDENTITY = AgentIdentity("worker-1", "worker", "team-a", ("summarize",), "uid-1")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Mesh:
    """A key ring, an issuer and a verifier sharing one fake clock."""

    def __init__(self, algorithm: str = "EdDSA", cache_size: int = 0) -> None:
        self.clock = FakeClock(dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
        self.ring = KeyRing.generate(algorithm, self.clock.now())  # type: ignore[arg-type]
        self.revocations = RevocationList()
        self.issuer = TokenIssuer(lambda: self.ring, self.clock)
        self.verifier = TokenVerifier(
            lambda: self.ring, self.clock, self.revocations, cache_size=cache_size
        )

    def token(self) -> str:
        return self.issuer.issue(IDENTITY)[0]

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(self.clock.now().timestamp())
        base: dict[str, Any] = {
            "sub": "worker-1",
            "agentType": "worker",
            "namespace": "team-a",
            "capabilities": [],
            "agentUid": "uid-1",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "jti": "j-1",
            "iss": "agent-mesh",
            "aud": "agent-mesh",
        }
        base.update(changes)
        return {k: v for k, v in base.items() if v is not None}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        key = self.ring.active
        headers = {"typ": TOKEN_TYPE, "kid": key.kid, **header}
        return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers=headers)

    def refuse(self, token: str) -> str:
        return self.refusal(token).code

    def refusal(self, token: str) -> AuthError:
        with pytest.raises(AuthError) as caught:
            self.verifier.verify(token)
        assert caught.value.status == 401
        assert not token or token not in caught.value.message  # never echo a token
        return caught.value


@pytest.fixture
def mesh() -> Mesh:
    return Mesh()


@pytest.fixture
def no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if verification opens a file, a URL or a socket."""

    def forbidden(*_: Any, **__: Any) -> Any:
        pytest.fail("verification tried to open a file, a URL or a connection")

    monkeypatch.setattr(builtins, "open", forbidden)
    monkeypatch.setattr(urllib.request, "urlopen", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature PyJWT was asked to check."""
    seen: list[str] = []
    real = tokens_module.jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(tokens_module.jwt, "decode", counting)
    return seen


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_issued_token_verifies_with_both_algorithms(algorithm: str) -> None:
    mesh = Mesh(algorithm)
    token, issued = mesh.issuer.issue(IDENTITY)
    claims = mesh.verifier.verify(token)
    assert claims == issued
    assert claims.identity == IDENTITY
    header = jwt.get_unverified_header(token)
    assert header == {"alg": algorithm, "typ": TOKEN_TYPE, "kid": mesh.ring.active.kid}


def test_alg_none_is_refused(mesh: Mesh) -> None:
    header = {"alg": "none", "typ": TOKEN_TYPE, "kid": mesh.ring.active.kid}
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(mesh.claims()).encode())}."
    assert mesh.refuse(token) == "AlgorithmNotAllowed"


def test_hs256_keyed_with_the_public_key_is_refused(mesh: Mesh) -> None:
    public_pem = mesh.ring.active.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": TOKEN_TYPE, "kid": mesh.ring.active.kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(mesh.claims()).encode())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert mesh.refuse(f"{signing_input}.{b64(mac)}") == "AlgorithmNotAllowed"


def signed_by(other: Mesh, algorithm: str, as_: Mesh) -> str:
    """A token with the claims and key id of mesh `as_`, signed with `other`'s key."""
    return jwt.encode(
        as_.claims(),
        other.ring.active.private_key,
        algorithm=algorithm,
        headers={"typ": TOKEN_TYPE, "kid": as_.ring.active.kid},
    )


def test_header_alg_other_than_the_keys_is_refused() -> None:
    mesh = Mesh("EdDSA")
    other = Mesh("ES256")
    # an ES256 signature presented under our EdDSA key's kid
    token = signed_by(other, "ES256", as_=mesh)
    assert mesh.refuse(token) == "AlgorithmNotAllowed"


def test_expired_token_is_refused(mesh: Mesh) -> None:
    token = mesh.token()
    mesh.clock.advance(3600 + 31)
    assert mesh.refuse(token) == "TokenExpired"


def test_expiry_within_the_leeway_is_accepted(mesh: Mesh) -> None:
    token = mesh.token()
    mesh.clock.advance(3600 + 29)
    assert mesh.verifier.verify(token).sub == "worker-1"


def test_not_yet_valid_token_is_refused(mesh: Mesh) -> None:
    now = int(mesh.clock.now().timestamp())
    token = mesh.sign(mesh.claims(nbf=now + 120))
    assert mesh.refuse(token) == "TokenNotYetValid"


def test_nbf_within_the_leeway_is_accepted(mesh: Mesh) -> None:
    now = int(mesh.clock.now().timestamp())
    assert mesh.verifier.verify(mesh.sign(mesh.claims(nbf=now + 20, iat=now + 20)))


def test_wrong_issuer_is_refused(mesh: Mesh) -> None:
    assert mesh.refuse(mesh.sign(mesh.claims(iss="someone-else"))) == "IssuerInvalid"


def test_wrong_audience_is_refused(mesh: Mesh) -> None:
    refusal = mesh.refusal(mesh.sign(mesh.claims(aud="kubernetes")))
    assert (refusal.code, refusal.field) == ("WrongAudience", "aud")
    assert "'kubernetes'" in refusal.message


# --- audiences: a token is good for the mesh API or for one agent, never both ---------------


def agent_verifier(mesh: Mesh, audience: str) -> TokenVerifier:
    """What an SDK agent's gate builds: a verifier of tokens addressed to it alone."""
    return TokenVerifier(lambda: mesh.ring, mesh.clock, mesh.revocations, audience=audience)


def test_the_issuer_addresses_tokens_to_the_mesh_api_unless_told_a_recipient(mesh: Mesh) -> None:
    _, api = mesh.issuer.issue(IDENTITY)
    assert api.aud == "agent-mesh"
    _, peer = mesh.issuer.issue(
        IDENTITY, audience=recipient_audience("team-a", "echo"), lifetime=dt.timedelta(minutes=5)
    )
    assert peer.aud == "team-a/echo"
    assert peer.exp - peer.iat == 300
    assert (peer.sub, peer.agent_type, peer.namespace, peer.agent_uid) == (
        api.sub,
        api.agent_type,
        api.namespace,
        api.agent_uid,
    )


def test_the_mesh_api_refuses_a_token_addressed_to_an_agent(mesh: Mesh) -> None:
    token, _ = mesh.issuer.issue(IDENTITY, audience="team-a/echo")
    refusal = mesh.refusal(token)
    assert (refusal.code, refusal.field) == ("WrongAudience", "aud")
    assert "'team-a/echo'" in refusal.message


def test_an_agent_refuses_a_mesh_api_token(mesh: Mesh) -> None:
    with pytest.raises(AuthError) as caught:
        agent_verifier(mesh, "team-a/echo").verify(mesh.token())
    assert (caught.value.code, caught.value.field) == ("WrongAudience", "aud")


def test_an_agent_refuses_a_token_addressed_to_another_agent(mesh: Mesh) -> None:
    for_other, _ = mesh.issuer.issue(IDENTITY, audience="team-a/other")
    for_same_id_elsewhere, _ = mesh.issuer.issue(IDENTITY, audience="team-b/echo")
    echo = agent_verifier(mesh, "team-a/echo")
    for token in (for_other, for_same_id_elsewhere):
        with pytest.raises(AuthError) as caught:
            echo.verify(token)
        assert caught.value.code == "WrongAudience"
    own, _ = mesh.issuer.issue(IDENTITY, audience="team-a/echo")
    assert echo.verify(own).aud == "team-a/echo"


def test_an_audience_list_naming_the_agent_is_refused(mesh: Mesh) -> None:
    """PyJWT accepts a list that contains the audience; a mesh token names exactly one."""
    token = mesh.sign(mesh.claims(aud=["team-a/echo", "agent-mesh"]))
    with pytest.raises(AuthError) as caught:
        agent_verifier(mesh, "team-a/echo").verify(token)
    assert caught.value.code == "WrongAudience"
    assert mesh.refuse(token) == "WrongAudience"


def test_tampered_payload_is_refused(mesh: Mesh) -> None:
    header, _, signature = mesh.token().split(".")
    forged = b64(json.dumps(mesh.claims(agentType="orchestrator")).encode())
    assert mesh.refuse(f"{header}.{forged}.{signature}") == "SignatureInvalid"


def test_unknown_kid_is_refused(mesh: Mesh) -> None:
    token = mesh.sign(mesh.claims(), kid="AAAAAAAAAAAAAAAAAAAAAA")
    assert mesh.refuse(token) == "UnknownKey"


def test_missing_kid_is_refused(mesh: Mesh) -> None:
    key = mesh.ring.active
    token = jwt.encode(
        mesh.claims(), key.private_key, algorithm=key.algorithm, headers={"typ": TOKEN_TYPE}
    )
    assert mesh.refuse(token) == "UnknownKey"


@pytest.mark.parametrize(
    "kid",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "file:///etc/passwd",
        "https://evil.example/jwks.json",
        "kid' OR '1'='1",
        {"$ne": None},
    ],
)
@pytest.mark.usefixtures("no_io")
def test_kid_injection_is_refused_without_touching_files_or_network(mesh: Mesh, kid: Any) -> None:
    if isinstance(kid, str):
        token = mesh.sign(mesh.claims(), kid=kid)
    else:  # PyJWT will not even write a non-string kid: forge the header by hand
        key = mesh.ring.active
        header = b64(json.dumps({"alg": key.algorithm, "typ": TOKEN_TYPE, "kid": kid}).encode())
        payload = b64(json.dumps(mesh.claims()).encode())
        signature = key.private_key.sign(f"{header}.{payload}".encode())  # type: ignore[call-arg]
        token = f"{header}.{payload}.{b64(signature)}"
    refusal = mesh.refusal(token)
    assert (refusal.code, refusal.field) == ("UnknownKey", "kid")


@pytest.mark.parametrize("header", ["jwk", "jku", "x5u", "x5c"])
@pytest.mark.usefixtures("no_io")
def test_attacker_key_named_in_the_header_is_ignored(mesh: Mesh, header: str) -> None:
    attacker = ed25519.Ed25519PrivateKey.generate()
    jwk = jwt.algorithms.OKPAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    value: Any = {
        "jwk": jwk,
        "x5c": [b64(b"an attacker certificate")],
    }.get(header, "https://evil.example/jwks.json")
    token = jwt.encode(
        mesh.claims(),
        attacker,
        algorithm="EdDSA",
        headers={"typ": TOKEN_TYPE, "kid": mesh.ring.active.kid, header: value},
    )
    assert mesh.refuse(token) == "SignatureInvalid"


def test_token_signed_by_another_mesh_is_refused(mesh: Mesh) -> None:
    assert mesh.refuse(Mesh().token()) == "UnknownKey"


def test_token_of_another_mesh_relabelled_with_our_kid_is_refused(mesh: Mesh) -> None:
    other = Mesh()
    token = signed_by(other, "EdDSA", as_=mesh)
    assert mesh.refuse(token) == "SignatureInvalid"


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "AGENT-MESH+JWT"])
def test_other_token_types_are_refused(mesh: Mesh, typ: str) -> None:
    refusal = mesh.refusal(mesh.sign(mesh.claims(), typ=typ))
    assert (refusal.code, refusal.field) == ("TokenTypeInvalid", "typ")


def test_token_without_typ_is_refused(mesh: Mesh) -> None:
    token = mesh.sign(mesh.claims(), typ=None)  # PyJWT drops a None typ instead of adding JWT
    assert "typ" not in jwt.get_unverified_header(token)
    assert mesh.refuse(token) == "TokenTypeInvalid"


@pytest.mark.parametrize(
    "claim", ["exp", "iat", "nbf", "iss", "aud", "sub", "jti", "agentType", "namespace", "agentUid"]
)
def test_each_required_claim_is_required(mesh: Mesh, claim: str) -> None:
    refusal = mesh.refusal(mesh.sign(mesh.claims(**{claim: None})))
    assert (refusal.code, refusal.field) == ("ClaimMissing", claim)
    assert claim in refusal.message


def test_missing_capabilities_claim_is_refused(mesh: Mesh) -> None:
    refusal = mesh.refusal(mesh.sign(mesh.claims(capabilities=None)))
    assert (refusal.code, refusal.field) == ("ClaimMissing", "capabilities")


def test_claim_of_the_wrong_type_is_refused_naming_it(mesh: Mesh) -> None:
    refusal = mesh.refusal(mesh.sign(mesh.claims(exp="tomorrow")))
    assert (refusal.code, refusal.field) == ("TokenMalformed", "exp")


def test_iat_in_the_future_beyond_the_leeway_is_refused(mesh: Mesh) -> None:
    now = int(mesh.clock.now().timestamp())
    refusal = mesh.refusal(mesh.sign(mesh.claims(iat=now + 120)))
    assert (refusal.code, refusal.field) == ("TokenNotYetValid", "iat")


def test_revoked_jti_is_refused(mesh: Mesh) -> None:
    token = mesh.token()
    jti = mesh.verifier.verify(token).jti
    mesh.revocations.revoke_token(jti, mesh.clock.now() + dt.timedelta(hours=1))
    assert mesh.refuse(token) == "TokenRevoked"


def test_tokens_issued_before_an_agent_revocation_are_refused_later_ones_pass(mesh: Mesh) -> None:
    old = mesh.token()
    mesh.clock.advance(10)
    mesh.revocations.revoke_agent("team-a", "worker-1", mesh.clock.now())
    mesh.clock.advance(2)
    new = mesh.token()
    assert mesh.refuse(old) == "TokenRevoked"
    assert mesh.verifier.verify(new).sub == "worker-1"


def test_agent_revocation_does_not_touch_other_agents(mesh: Mesh) -> None:
    token = mesh.token()
    mesh.clock.advance(1)
    mesh.revocations.revoke_agent("team-b", "worker-1", mesh.clock.now())
    mesh.revocations.revoke_agent("team-a", "worker-2", mesh.clock.now())
    assert mesh.verifier.verify(token)


def test_rotation_keeps_old_tokens_valid_during_the_overlap_only(mesh: Mesh) -> None:
    old = mesh.token()
    old_kid = mesh.ring.active.kid
    mesh.ring = mesh.ring.rotate(mesh.clock.now(), dt.timedelta(minutes=10))
    new = mesh.token()
    assert jwt.get_unverified_header(new)["kid"] == mesh.ring.active.kid != old_kid
    mesh.clock.advance(9 * 60)
    mesh.ring = mesh.ring.prune(mesh.clock.now())
    assert mesh.verifier.verify(old)
    mesh.clock.advance(61)
    mesh.ring = mesh.ring.prune(mesh.clock.now())
    assert mesh.refuse(old) == "UnknownKey"
    assert mesh.verifier.verify(new)


def test_a_key_past_its_retirement_no_longer_verifies_before_the_ring_is_pruned(
    mesh: Mesh,
) -> None:
    old = mesh.token()
    mesh.ring = mesh.ring.rotate(mesh.clock.now(), dt.timedelta(minutes=10))
    mesh.clock.advance(10 * 60)  # the ring still holds the old key, but its time is up
    assert mesh.ring.key_for(jwt.get_unverified_header(old)["kid"]) is not None
    refusal = mesh.refusal(old)
    assert (refusal.code, refusal.field) == ("UnknownKey", "kid")
    assert mesh.verifier.verify(mesh.token())


def test_a_repeated_token_skips_the_signature_check(decodes: list[str]) -> None:
    mesh = Mesh(cache_size=16)
    token = mesh.token()
    first = mesh.verifier.verify(token)
    assert mesh.verifier.verify(token) == first
    assert mesh.verifier.verify(token) == first
    assert decodes == [token]


def test_the_cache_can_be_disabled(decodes: list[str]) -> None:
    mesh = Mesh(cache_size=0)
    token = mesh.token()
    mesh.verifier.verify(token)
    mesh.verifier.verify(token)
    assert decodes == [token, token]


def test_the_cache_is_bounded_and_evicts_the_oldest(decodes: list[str]) -> None:
    mesh = Mesh(cache_size=2)
    first, second, third = mesh.token(), mesh.token(), mesh.token()
    for token in (first, second, third):
        mesh.verifier.verify(token)
    decodes.clear()
    mesh.verifier.verify(third)
    mesh.verifier.verify(second)
    assert decodes == []
    mesh.verifier.verify(first)  # evicted: its signature is checked again
    assert decodes == [first]


def test_a_refused_token_is_not_cached(decodes: list[str]) -> None:
    mesh = Mesh(cache_size=16)
    token = mesh.sign(mesh.claims(iss="someone-else"))
    assert mesh.refuse(token) == "IssuerInvalid"
    assert mesh.refuse(token) == "IssuerInvalid"
    assert decodes == [token, token]


def test_a_cached_token_is_still_not_valid_before_nbf(decodes: list[str]) -> None:
    mesh = Mesh(cache_size=16)
    now = int(mesh.clock.now().timestamp())
    token = mesh.sign(mesh.claims(nbf=now + 20, iat=now))
    assert mesh.verifier.verify(token)  # within the leeway
    mesh.clock.advance(-20)  # the clock stepped back (NTP): nbf is now out of the leeway
    assert mesh.refuse(token) == "TokenNotYetValid"


def cached_token() -> tuple[Mesh, str]:
    """A verifier that caches, and a token it has verified (so holds in its cache)."""
    mesh = Mesh(cache_size=16)
    token = mesh.token()
    assert mesh.verifier.verify(token)
    return mesh, token


def test_a_cached_token_still_expires() -> None:
    mesh, token = cached_token()
    mesh.clock.advance(3600 + 31)
    assert mesh.refuse(token) == "TokenExpired"


def test_a_cached_token_can_still_be_revoked() -> None:
    mesh = Mesh(cache_size=16)
    token = mesh.token()
    jti = mesh.verifier.verify(token).jti
    mesh.revocations.revoke_token(jti, mesh.clock.now() + dt.timedelta(hours=1))
    assert mesh.refuse(token) == "TokenRevoked"


def test_a_cached_token_dies_with_its_key() -> None:
    mesh, token = cached_token()
    mesh.ring = mesh.ring.rotate(mesh.clock.now(), dt.timedelta(seconds=0))
    mesh.clock.advance(1)
    mesh.ring = mesh.ring.prune(mesh.clock.now())
    assert mesh.refuse(token) == "UnknownKey"


def test_a_cached_token_dies_at_its_keys_retirement_even_unpruned() -> None:
    mesh, token = cached_token()
    mesh.ring = mesh.ring.rotate(mesh.clock.now(), dt.timedelta(minutes=5))
    mesh.clock.advance(4 * 60)
    assert mesh.verifier.verify(token)  # still in the overlap
    mesh.clock.advance(60)
    assert mesh.refuse(token) == "UnknownKey"


def test_claims_serialize_in_camel_case() -> None:
    mesh = Mesh()
    claims = mesh.verifier.verify(mesh.token())
    wire = claims.model_dump(by_alias=True)
    assert {"agentType", "agentUid", "namespace", "capabilities"} <= set(wire)
    assert MeshClaims.model_validate(wire) == claims


@pytest.mark.parametrize("token", ["", "abc", "!!!.e30.sig", "bm90IGpzb24.e30.sig", "WzFd.e30.sig"])
def test_token_that_is_not_a_jws_is_refused(mesh: Mesh, token: str) -> None:
    assert mesh.refuse(token) == "TokenMalformed"
