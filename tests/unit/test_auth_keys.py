"""Signing keys: generation, rotation, the Secret form, JWKS."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent_mesh.auth.keys import KID_PATTERN, SECRET_KEY, KeyRing
from agent_mesh.auth.revocation import RevocationList
from agent_mesh.auth.tokens import AgentIdentity, TokenIssuer, TokenVerifier
from agent_mesh.domain.clock import FakeClock
from agent_mesh.domain.errors import ValidationError

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def stored(ring: KeyRing) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ring.to_secret_data()[SECRET_KEY])
    return doc


def corrupt_first_key(**changes: Any) -> dict[str, str]:
    """The Secret data of a fresh ES256 ring with its one key's fields changed (... drops one)."""
    doc = stored(KeyRing.generate("ES256", NOW))
    doc["keys"][0].update(changes)
    doc["keys"][0] = {k: v for k, v in doc["keys"][0].items() if v is not ...}
    return {SECRET_KEY: json.dumps(doc)}


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_generated_kids_are_random_url_safe_ids(algorithm: str) -> None:
    kids = {KeyRing.generate(algorithm, NOW).active.kid for _ in range(20)}  # type: ignore[arg-type]
    assert len(kids) == 20
    assert all(KID_PATTERN.match(kid) and 16 <= len(kid) <= 32 for kid in kids)


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_secret_round_trip_keeps_kids_active_key_and_retirement(algorithm: str) -> None:
    ring = KeyRing.generate(algorithm, NOW).rotate(NOW, dt.timedelta(hours=1))  # type: ignore[arg-type]
    back = KeyRing.from_secret_data(ring.to_secret_data())
    assert back.active.kid == ring.active.kid
    assert set(back.verifying) == set(ring.verifying)
    assert {k: v.retire_at for k, v in back.verifying.items()} == {
        k: v.retire_at for k, v in ring.verifying.items()
    }


def test_rotation_retires_the_old_key_after_the_overlap() -> None:
    ring = KeyRing.generate("EdDSA", NOW)
    old = ring.active.kid
    rotated = ring.rotate(NOW, dt.timedelta(minutes=5))
    assert rotated.active.kid != old
    assert old in rotated.prune(NOW + dt.timedelta(minutes=4)).verifying
    assert old not in rotated.prune(NOW + dt.timedelta(minutes=5)).verifying


def test_rotation_drops_keys_already_retired() -> None:
    first = KeyRing.generate("EdDSA", NOW)
    second = first.rotate(NOW, dt.timedelta(minutes=5))
    third = second.rotate(NOW + dt.timedelta(minutes=5), dt.timedelta(minutes=5))
    assert set(third.verifying) == {second.active.kid, third.active.kid}
    assert third.verifying[second.active.kid].retire_at == NOW + dt.timedelta(minutes=10)
    assert third.active.retire_at is None


def test_rotation_can_switch_the_algorithm() -> None:
    ring = KeyRing.generate("EdDSA", NOW).rotate(NOW, dt.timedelta(minutes=5), "ES256")
    assert ring.active.algorithm == "ES256"
    assert sorted(key.algorithm for key in ring.verifying.values()) == ["ES256", "EdDSA"]


def test_rotation_is_due_by_age() -> None:
    ring = KeyRing.generate("EdDSA", NOW)
    assert not ring.needs_rotation(NOW + dt.timedelta(days=6), dt.timedelta(days=7))
    assert ring.needs_rotation(NOW + dt.timedelta(days=7), dt.timedelta(days=7))


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, SECRET_KEY),
        ({SECRET_KEY: "{not json"}, SECRET_KEY),
        ({SECRET_KEY: json.dumps({"keys": "x"})}, f"{SECRET_KEY}.keys"),
        ({SECRET_KEY: json.dumps({"active": "x", "keys": [{"kid": "abcdefgh"}]})}, None),
        ({SECRET_KEY: json.dumps({"active": "nope", "keys": []})}, f"{SECRET_KEY}.active"),
    ],
)
def test_corrupt_secret_names_the_field(data: dict[str, str], field: str | None) -> None:
    with pytest.raises(ValidationError) as caught:
        KeyRing.from_secret_data(data)
    if field is not None:
        assert caught.value.field == field
    else:
        assert caught.value.field and caught.value.field.startswith(f"{SECRET_KEY}.keys[0]")


def test_key_whose_type_does_not_match_its_algorithm_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        KeyRing.from_secret_data(corrupt_first_key(algorithm="EdDSA"))
    assert caught.value.field == f"{SECRET_KEY}.keys[0].privateKeyPem"


def test_ec_key_on_another_curve_is_not_an_es256_key() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValidationError) as caught:
        KeyRing.from_secret_data(corrupt_first_key(privateKeyPem=p384.decode()))
    assert caught.value.field == f"{SECRET_KEY}.keys[0].privateKeyPem"


@pytest.mark.parametrize("name", ["kid", "algorithm", "privateKeyPem", "createdAt"])
def test_key_missing_a_field_is_refused_naming_it(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        KeyRing.from_secret_data(corrupt_first_key(**{name: ...}))
    assert caught.value.field == f"{SECRET_KEY}.keys[0].{name}"


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"privateKeyPem": "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n"}, "privateKeyPem"),
        ({"algorithm": "HS256"}, "algorithm"),
        ({"algorithm": "none"}, "algorithm"),
        ({"kid": "../../etc/passwd"}, "kid"),
        ({"createdAt": "last tuesday"}, "createdAt"),
        ({"createdAt": "2026-06-01T00:00:00"}, "createdAt"),  # no zone
        ({"retireAt": "soon"}, "retireAt"),
        ({"retireAt": 1780000000}, "retireAt"),
    ],
)
def test_key_with_a_bad_field_is_refused_naming_it(changes: dict[str, Any], name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        KeyRing.from_secret_data(corrupt_first_key(**changes))
    assert caught.value.field == f"{SECRET_KEY}.keys[0].{name}"


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_jwks_has_public_keys_only_and_they_verify_tokens(algorithm: str) -> None:
    clock = FakeClock(NOW)
    ring = KeyRing.generate(algorithm, NOW).rotate(NOW, dt.timedelta(hours=1))  # type: ignore[arg-type]
    jwks = ring.jwks()
    assert len(jwks["keys"]) == 2
    public = {"EdDSA": {"kty", "crv", "x"}, "ES256": {"kty", "crv", "x", "y"}}[algorithm]
    for key in jwks["keys"]:
        assert "d" not in key
        retiring = {"retireAt"} if key["kid"] != ring.active.kid else set()
        assert set(key) == public | {"kid", "alg", "use"} | retiring
        assert key["use"] == "sig"
        assert key["alg"] == algorithm
        assert key["crv"] == {"EdDSA": "Ed25519", "ES256": "P-256"}[algorithm]
        assert key["kty"] == {"EdDSA": "OKP", "ES256": "EC"}[algorithm]
    assert {key["kid"] for key in jwks["keys"]} == set(ring.verifying)
    assert '"d"' not in json.dumps(jwks)
    token, _ = TokenIssuer(lambda: ring, clock).issue(AgentIdentity("a", "worker", "ns", (), "u"))
    kid = jwt.get_unverified_header(token)["kid"]
    public = jwt.PyJWKSet.from_dict(jwks)[kid]
    payload = jwt.decode(
        token,
        public.key,
        algorithms=[algorithm],
        audience="agent-mesh",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert payload["sub"] == "a"
    assert TokenVerifier(lambda: ring, clock, RevocationList()).verify(token).sub == "a"


def test_jwks_carries_the_retirement_time_of_a_rotated_out_key_only() -> None:
    old = KeyRing.generate("ES256", NOW)
    ring = old.rotate(NOW, dt.timedelta(minutes=5))
    by_kid = {key["kid"]: key for key in ring.jwks()["keys"]}
    assert by_kid[old.active.kid]["retireAt"] == "2026-06-01T00:05:00Z"
    assert "retireAt" not in by_kid[ring.active.kid]


def test_kid_lookup_refuses_malformed_kids() -> None:
    ring = KeyRing.generate("EdDSA", NOW)
    assert ring.key_for(ring.active.kid) is ring.active
    for kid in ("../x", "", "a" * 65, None, 7, "short"):
        assert ring.key_for(kid) is None
