"""Signing keys: generation, rotation, the Secret form, JWKS."""

from __future__ import annotations

import datetime as dt
import json

import jwt
import pytest

from agent_mesh.auth.keys import SECRET_KEY, KeyRing
from agent_mesh.auth.revocation import RevocationList
from agent_mesh.auth.tokens import AgentIdentity, TokenIssuer, TokenVerifier
from agent_mesh.domain.clock import FakeClock
from agent_mesh.domain.errors import ValidationError

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


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
    data = json.loads(KeyRing.generate("ES256", NOW).to_secret_data()[SECRET_KEY])
    data["keys"][0]["algorithm"] = "EdDSA"
    with pytest.raises(ValidationError) as caught:
        KeyRing.from_secret_data({SECRET_KEY: json.dumps(data)})
    assert caught.value.field == f"{SECRET_KEY}.keys[0].privateKeyPem"


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_jwks_has_public_keys_only_and_they_verify_tokens(algorithm: str) -> None:
    clock = FakeClock(NOW)
    ring = KeyRing.generate(algorithm, NOW).rotate(NOW, dt.timedelta(hours=1))  # type: ignore[arg-type]
    jwks = ring.jwks()
    assert len(jwks["keys"]) == 2
    for key in jwks["keys"]:
        assert "d" not in key
        assert key["use"] == "sig"
        assert key["alg"] == algorithm
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


def test_kid_lookup_refuses_malformed_kids() -> None:
    ring = KeyRing.generate("EdDSA", NOW)
    assert ring.key_for(ring.active.kid) is ring.active
    for kid in ("../x", "", "a" * 65, None, 7, "short"):
        assert ring.key_for(kid) is None
