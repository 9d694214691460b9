"""A verify-only key set built from the operator's JWKS: how agents check the mesh tokens
of their callers without holding (or being able to fetch) any private key. A rotated-out
key keeps its `retireAt`, so it stops verifying on time even before the next fetch."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from agent_mesh.auth.keys import ALGORITHMS, KID_PATTERN, RETIRE_AT, Algorithm, PublicKey
from agent_mesh.domain.clock import parse_rfc3339
from agent_mesh.domain.errors import ValidationError


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    kid: str
    algorithm: Algorithm
    public_key: PublicKey
    retire_at: dt.datetime | None = None
    """From the JWK's `retireAt`: the verifier refuses the key from then on."""


@dataclass(frozen=True, slots=True)
class PublicKeySet:
    """Keys by kid, with the same lookup rules as the operator's own ring."""

    keys: Mapping[str, VerifyingKey]

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> PublicKeySet:
        """Parse a JWKS document; keys with a private member or an unknown alg are refused."""
        entries = jwks.get("keys")
        if not isinstance(entries, list):
            raise ValidationError("JWKS has no keys list", field="keys")
        keys = {}
        for i, entry in enumerate(entries):
            where = f"keys[{i}]"
            if not isinstance(entry, dict):
                raise ValidationError("must be an object", field=where)
            if "d" in entry:
                raise ValidationError("a JWKS must not carry private keys", field=f"{where}.d")
            kid, alg = entry.get("kid"), entry.get("alg")
            if not isinstance(kid, str) or not KID_PATTERN.match(kid):
                raise ValidationError("kid is missing or not a url-safe id", field=f"{where}.kid")
            if alg not in ALGORITHMS:
                raise ValidationError(
                    f"alg {alg!r} must be one of {', '.join(ALGORITHMS)}", field=f"{where}.alg"
                )
            try:
                public = jwt.PyJWK.from_dict(entry).key
            except jwt.PyJWTError as error:
                raise ValidationError(f"not a usable key: {error}", field=where) from None
            retire_at = None
            if entry.get(RETIRE_AT) is not None:
                retire_at = parse_rfc3339(entry[RETIRE_AT])
                if retire_at is None:
                    raise ValidationError(
                        f"{RETIRE_AT} {entry[RETIRE_AT]!r} is not an RFC 3339 time with a zone",
                        field=f"{where}.{RETIRE_AT}",
                    )
            keys[kid] = VerifyingKey(kid, alg, public, retire_at)
        return cls(keys)

    def key_for(self, kid: object) -> VerifyingKey | None:
        if not isinstance(kid, str) or not KID_PATTERN.match(kid):
            return None
        return self.keys.get(kid)
