"""Signing keys: one active key signs, recent ones still verify (the rotation overlap).

Kids are random url-safe ids looked up in this ring only: a kid is never a path or URL.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import OKPAlgorithm

from agent_mesh.domain.clock import parse_rfc3339, rfc3339
from agent_mesh.domain.errors import ValidationError

Algorithm = Literal["EdDSA", "ES256"]
ALGORITHMS: Final[tuple[Algorithm, ...]] = ("EdDSA", "ES256")
KID_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
SECRET_KEY: Final = "keys.json"  # noqa: S105  (a key in the Secret, not a secret)
RETIRE_AT: Final = "retireAt"
"""The JWK member carrying a rotated-out key's retirement time."""

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


def ec_public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """A P-256 public key as a JWK with `x` and `y` at their full 32 bytes (RFC 7518
    §6.2.1.2). Some PyJWT releases within our floor drop a coordinate's leading zero bytes
    and then refuse their own output (about one key in a hundred), so it is built here."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"only P-256 keys are used for ES256, not {key.curve.name}")
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key pair; `retire_at` is set once rotated out (it stops verifying then)."""

    kid: str
    algorithm: Algorithm
    private_key: PrivateKey
    public_key: PublicKey
    created_at: dt.datetime
    retire_at: dt.datetime | None = None

    @classmethod
    def generate(cls, algorithm: Algorithm, now: dt.datetime) -> SigningKey:
        private: PrivateKey
        if algorithm == "EdDSA":
            private = ed25519.Ed25519PrivateKey.generate()
        elif algorithm == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValidationError(
                f"unknown key algorithm {algorithm!r}: must be one of {', '.join(ALGORITHMS)}",
                field="keyAlgorithm",
            )
        return cls(secrets.token_urlsafe(16), algorithm, private, private.public_key(), now)

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK; a rotated-out key carries `retireAt` (RFC 3339, a
        member of ours: JWK readers ignore members they do not know), the moment agents
        must stop accepting it."""
        key = self.public_key
        if isinstance(key, ed25519.Ed25519PublicKey):
            jwk = OKPAlgorithm.to_jwk(key, as_dict=True)
        else:
            jwk = ec_public_jwk(key)
        out = {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}
        if self.retire_at is not None:
            out[RETIRE_AT] = rfc3339(self.retire_at)  # whole seconds, rounded down: earlier
        return out


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The active key and every key that still verifies, by kid."""

    active: SigningKey
    verifying: Mapping[str, SigningKey]

    @classmethod
    def generate(cls, algorithm: Algorithm, now: dt.datetime) -> KeyRing:
        key = SigningKey.generate(algorithm, now)
        return cls(key, {key.kid: key})

    def rotate(
        self, now: dt.datetime, overlap: dt.timedelta, algorithm: Algorithm | None = None
    ) -> KeyRing:
        """A new active key; the old one verifies until now + overlap."""
        new = SigningKey.generate(algorithm or self.active.algorithm, now)
        keys = dict(self.prune(now).verifying)
        keys[self.active.kid] = replace(self.active, retire_at=now + overlap)
        keys[new.kid] = new
        return KeyRing(new, keys)

    def prune(self, now: dt.datetime) -> KeyRing:
        """Without keys whose overlap has ended."""
        keys = {
            kid: key
            for kid, key in self.verifying.items()
            if key.retire_at is None or key.retire_at > now
        }
        keys[self.active.kid] = self.active
        return KeyRing(self.active, keys)

    def needs_rotation(self, now: dt.datetime, interval: dt.timedelta) -> bool:
        """Whether the active key is at least `interval` old."""
        return now - self.active.created_at >= interval

    def key_for(self, kid: object) -> SigningKey | None:
        """A dictionary lookup, nothing else; malformed kids are refused before it."""
        if not isinstance(kid, str) or not KID_PATTERN.match(kid):
            return None
        return self.verifying.get(kid)

    def jwks(self) -> dict[str, Any]:
        """RFC 7517 key set of the public halves of every verifying key, each rotated-out
        one with its `retireAt`."""
        return {"keys": [key.public_jwk() for key in self.verifying.values()]}

    def to_secret_data(self) -> dict[str, str]:
        """The Secret's string data (the caller base64-encodes): one `keys.json` document."""
        keys = [
            {
                "kid": key.kid,
                "algorithm": key.algorithm,
                "privateKeyPem": key.private_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode(),
                "createdAt": rfc3339(key.created_at),
                "retireAt": rfc3339(key.retire_at) if key.retire_at else None,
            }
            for key in self.verifying.values()
        ]
        return {SECRET_KEY: json.dumps({"active": self.active.kid, "keys": keys}, indent=1)}

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str]) -> KeyRing:
        """Parse the Secret's data; a corrupt Secret is an error naming the field."""
        text = data.get(SECRET_KEY)
        if text is None:
            raise ValidationError(f"key Secret has no {SECRET_KEY}", field=SECRET_KEY)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValidationError(f"{SECRET_KEY} is not JSON: {error}", field=SECRET_KEY) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValidationError(f"{SECRET_KEY} must hold a keys list", field=f"{SECRET_KEY}.keys")
        keys = {}
        for i, entry in enumerate(doc["keys"]):
            key = _parse_key(entry, f"{SECRET_KEY}.keys[{i}]")
            keys[key.kid] = key
        active = keys.get(str(doc.get("active")))
        if active is None:
            raise ValidationError(
                f"active key {doc.get('active')!r} is not among the keys",
                field=f"{SECRET_KEY}.active",
            )
        return cls(active, keys)


def _parse_key(entry: Any, where: str) -> SigningKey:
    if not isinstance(entry, dict):
        raise ValidationError("must be an object", field=where)
    for name in ("kid", "algorithm", "privateKeyPem", "createdAt"):
        if not isinstance(entry.get(name), str):
            raise ValidationError(f"{name} is missing or not a string", field=f"{where}.{name}")
    kid, algorithm = entry["kid"], entry["algorithm"]
    if not KID_PATTERN.match(kid):
        raise ValidationError(f"kid {kid!r} is not a url-safe id", field=f"{where}.kid")
    if algorithm not in ALGORITHMS:
        raise ValidationError(
            f"algorithm {algorithm!r} must be one of {', '.join(ALGORITHMS)}",
            field=f"{where}.algorithm",
        )
    try:
        private = serialization.load_pem_private_key(entry["privateKeyPem"].encode(), None)
    except (ValueError, TypeError) as error:
        raise ValidationError(
            f"not a PEM private key: {error}", field=f"{where}.privateKeyPem"
        ) from None
    expected = ed25519.Ed25519PrivateKey if algorithm == "EdDSA" else ec.EllipticCurvePrivateKey
    if not isinstance(private, expected) or (
        isinstance(private, ec.EllipticCurvePrivateKey)
        and not isinstance(private.curve, ec.SECP256R1)
    ):
        raise ValidationError(f"the key is not a {algorithm} key", field=f"{where}.privateKeyPem")
    created = _parse_time(entry["createdAt"], f"{where}.createdAt")
    retire_raw = entry.get("retireAt")
    retire = None if retire_raw is None else _parse_time(retire_raw, f"{where}.retireAt")
    return SigningKey(kid, algorithm, private, private.public_key(), created, retire)


def _parse_time(value: object, field: str) -> dt.datetime:
    moment = parse_rfc3339(value)
    if moment is None:
        raise ValidationError(f"{value!r} is not an RFC 3339 time with a zone", field=field)
    return moment
