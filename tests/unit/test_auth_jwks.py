"""Agents verify mesh tokens with the operator's published JWKS alone."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from agent_mesh.auth.jwks import PublicKeySet
from agent_mesh.auth.keys import KeyRing, ec_public_jwk
from agent_mesh.auth.revocation import RevocationList
from agent_mesh.auth.tokens import AgentIdentity, TokenIssuer, TokenVerifier
from agent_mesh.domain.clock import FakeClock
from agent_mesh.domain.errors import AuthError, ValidationError

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
def test_token_verifies_with_the_published_keys_only(algorithm: Any) -> None:
    clock = FakeClock(NOW)
    ring = KeyRing.generate(algorithm, NOW)
    token, _ = TokenIssuer(lambda: ring, clock).issue(AgentIdentity("a", "worker", "ns", (), "u"))
    public = PublicKeySet.from_jwks(ring.jwks())
    verifier = TokenVerifier(lambda: public, clock, RevocationList())
    assert verifier.verify(token).sub == "a"


def test_a_token_from_another_operator_is_refused() -> None:
    clock = FakeClock(NOW)
    ours, theirs = KeyRing.generate("ES256", NOW), KeyRing.generate("ES256", NOW)
    token, _ = TokenIssuer(lambda: theirs, clock).issue(AgentIdentity("a", "w", "ns", (), "u"))
    public = PublicKeySet.from_jwks(ours.jwks())
    with pytest.raises(AuthError) as caught:
        TokenVerifier(lambda: public, clock, RevocationList()).verify(token)
    assert caught.value.code == "UnknownKey"


def test_jwks_with_a_private_member_is_refused() -> None:
    jwks = KeyRing.generate("ES256", NOW).jwks()
    jwks["keys"][0]["d"] = "secret"
    with pytest.raises(ValidationError) as caught:
        PublicKeySet.from_jwks(jwks)
    assert caught.value.field == "keys[0].d"


@pytest.mark.parametrize(
    ("change", "field"),
    [({"alg": "HS256"}, "keys[0].alg"), ({"kid": "../x"}, "keys[0].kid"), ({"x": "!"}, "keys[0]")],
)
def test_bad_jwks_entries_name_the_field(change: dict[str, str], field: str) -> None:
    jwks = KeyRing.generate("ES256", NOW).jwks()
    jwks["keys"][0].update(change)
    with pytest.raises(ValidationError) as caught:
        PublicKeySet.from_jwks(jwks)
    assert caught.value.field == field


def test_jwks_without_keys_is_refused() -> None:
    with pytest.raises(ValidationError):
        PublicKeySet.from_jwks({})


def test_a_rotated_out_key_stops_verifying_at_its_retire_time_from_the_jwks_alone() -> None:
    clock = FakeClock(NOW)
    old = KeyRing.generate("ES256", NOW)
    token, _ = TokenIssuer(lambda: old, clock).issue(AgentIdentity("a", "worker", "ns", (), "u"))
    public = PublicKeySet.from_jwks(old.rotate(NOW, dt.timedelta(minutes=5)).jwks())
    assert public.keys[old.active.kid].retire_at == NOW + dt.timedelta(minutes=5)
    verifier = TokenVerifier(lambda: public, clock, RevocationList())
    assert verifier.verify(token).sub == "a"  # within the overlap
    clock.advance(5 * 60)
    with pytest.raises(AuthError) as caught:  # the same key set, no refetch: retired now
        verifier.verify(token)
    assert caught.value.code == "UnknownKey"


@pytest.mark.parametrize("value", ["yesterday", "2026-06-01T00:00:00", 1780000000])
def test_a_malformed_retire_time_is_refused_naming_the_field(value: object) -> None:
    jwks = KeyRing.generate("ES256", NOW).jwks()
    jwks["keys"][0]["retireAt"] = value
    with pytest.raises(ValidationError) as caught:
        PublicKeySet.from_jwks(jwks)
    assert caught.value.field == "keys[0].retireAt"


def _key_with_a_short_coordinate() -> KeyRing:
    """A ring whose P-256 key has an x or y below 2**248: its big-endian form starts with
    a zero byte (about one key in a hundred)."""
    while True:
        ring = KeyRing.generate("ES256", NOW)
        numbers = ring.active.public_key.public_numbers()
        if numbers.x < 1 << 248 or numbers.y < 1 << 248:
            return ring


def test_a_key_whose_coordinate_starts_with_a_zero_byte_is_published_at_full_length() -> None:
    ring = _key_with_a_short_coordinate()
    entry = ring.jwks()["keys"][0]
    for member in ("x", "y"):  # RFC 7518 6.2.1.2: the full 32 bytes, leading zeros kept
        assert len(base64.urlsafe_b64decode(entry[member] + "==")) == 32
    clock = FakeClock(NOW)
    token, _ = TokenIssuer(lambda: ring, clock).issue(AgentIdentity("a", "w", "ns", (), "u"))
    public = PublicKeySet.from_jwks(ring.jwks())  # an agent reads it back and verifies
    assert TokenVerifier(lambda: public, clock, RevocationList()).verify(token).sub == "a"


def test_a_key_on_another_curve_is_refused_naming_the_curve() -> None:
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(ValueError, match="secp384r1"):
        ec_public_jwk(other)
