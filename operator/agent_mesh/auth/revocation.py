"""Revoked tokens (by jti, within one namespace) and revoked agents (every token issued
before a time).

Each entry carries the latest moment a token it covers could still be valid, fixed when it
is revoked, and is kept until then: lowering the token lifetime later never shortens it.
That moment takes into account the longest lifetime tokens may still have been issued
with (`IssuedLifetime`, kept with the list). The list is persisted by a store (a
ConfigMap) and merged, never overwritten.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from agent_mesh.domain.clock import parse_rfc3339, rfc3339
from agent_mesh.domain.errors import ValidationError

if TYPE_CHECKING:
    from agent_mesh.auth.tokens import MeshClaims

ANY_NAMESPACE: Final = "*"
"""The namespace of a jti entry stored before revocations were scoped to a namespace: it
refuses that jti in every namespace until it expires (a jti names one token anyway)."""


def _parse_time(value: Any, field: str) -> dt.datetime:
    moment = parse_rfc3339(value)
    if moment is None:
        raise ValidationError(f"{value!r} is not an RFC 3339 time with a zone", field=field)
    return moment


@dataclass(frozen=True, slots=True)
class IssuedLifetime:
    """Tokens with a lifetime of `seconds` may have been issued until `until` (None: they
    still are). Kept while such a token can be valid, so revocations outlast them."""

    seconds: int
    until: dt.datetime | None

    def latest_expiry(self, issued_before: dt.datetime) -> dt.datetime:
        """The latest `exp` of such a token issued before `issued_before`."""
        end = issued_before if self.until is None else min(issued_before, self.until)
        return end + dt.timedelta(seconds=self.seconds)


def _later(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    """The later of two expiries, an unknown one (None) losing to a known one."""
    if a is None or b is None:
        return a or b
    return max(a, b)


class RevocationList:
    """In-memory revocations with O(1) checks."""

    def __init__(self) -> None:
        # (namespace or ANY_NAMESPACE, jti) → when every token with that jti has expired
        self._tokens: dict[tuple[str, str], dt.datetime] = {}
        # (namespace, agentId) → (before, when every token it covers has expired; None:
        # unknown, an entry stored before expiries were, see `settle_unknown_expiries`)
        self._agents: dict[tuple[str, str], tuple[dt.datetime, dt.datetime | None]] = {}
        self.longest_lifetime: IssuedLifetime | None = None
        """The longest lifetime tokens may still be valid under (None: not tracked)."""

    def revoke_token(
        self, jti: str, expires_at: dt.datetime, namespace: str = ANY_NAMESPACE
    ) -> None:
        """Refuse the token `jti` of `namespace`; kept until `expires_at`."""
        key = (namespace, jti)
        current = self._tokens.get(key)
        self._tokens[key] = expires_at if current is None else max(current, expires_at)

    def revoke_agent(
        self,
        namespace: str,
        agent_id: str,
        before: dt.datetime,
        expires_at: dt.datetime | None = None,
    ) -> None:
        """Refuse every token of the agent issued before `before` (the later one wins);
        kept until `expires_at`, the latest expiry of a token it covers."""
        key = (namespace, agent_id)
        current = self._agents.get(key)
        if current is None:
            self._agents[key] = (before, expires_at)
        else:
            self._agents[key] = (max(current[0], before), _later(current[1], expires_at))

    def is_revoked(self, claims: MeshClaims) -> bool:
        """Dictionary lookups; `iat` is whole seconds, so the second of `before` counts."""
        tokens = self._tokens
        if tokens and (
            (claims.namespace, claims.jti) in tokens or (ANY_NAMESPACE, claims.jti) in tokens
        ):
            return True
        entry = self._agents.get((claims.namespace, claims.sub))
        return entry is not None and claims.iat < entry[0].timestamp()

    # --- how long entries are kept -----------------------------------------------------

    def latest_expiry(self, issued_before: dt.datetime, lifetime: dt.timedelta) -> dt.datetime:
        """The latest `exp` of a token issued before `issued_before`, under the current
        `lifetime` or a longer one still tracked."""
        latest = issued_before + lifetime
        if self.longest_lifetime is not None:
            latest = max(latest, self.longest_lifetime.latest_expiry(issued_before))
        return latest

    def track_lifetime(
        self, lifetime: dt.timedelta, now: dt.datetime, leeway: dt.timedelta
    ) -> bool:
        """Note that tokens are issued with `lifetime` from now on. A longer lifetime
        tracked before stays (marked as issued until now) while its tokens can still be
        valid. True when the record changed (worth persisting)."""
        seconds = int(lifetime.total_seconds())
        current = self.longest_lifetime
        if (
            current is not None
            and current.seconds > seconds
            and (
                current.until is None
                or current.until + dt.timedelta(seconds=current.seconds) + leeway > now
            )
        ):
            tracked = current if current.until is not None else IssuedLifetime(current.seconds, now)
        else:
            tracked = IssuedLifetime(seconds, None)
        self.longest_lifetime = tracked
        return tracked != current

    def settle_unknown_expiries(self, expires_at: dt.datetime) -> int:
        """Give agent entries stored without an expiry (before expiries were stored) one;
        how many there were."""
        unknown = [key for key, (_, expires) in self._agents.items() if expires is None]
        for key in unknown:
            self._agents[key] = (self._agents[key][0], expires_at)
        return len(unknown)

    def prune(self, now: dt.datetime) -> None:
        """Drop the entries whose tokens have all expired (by the expiry each carries)."""
        self._tokens = {k: t for k, t in self._tokens.items() if t > now}
        self._agents = {k: e for k, e in self._agents.items() if e[1] is None or e[1] > now}

    # --- merging and views -------------------------------------------------------------

    def merge(self, other: RevocationList) -> None:
        """Union with another writer's view, keeping the later `before` and expiry; the
        other's lifetime record, when it has one, replaces ours (the writer's latest)."""
        for (namespace, jti), expires in other._tokens.items():
            self.revoke_token(jti, expires, namespace)
        for (namespace, agent_id), (before, kept_until) in other._agents.items():
            self.revoke_agent(namespace, agent_id, before, kept_until)
        if other.longest_lifetime is not None:
            self.longest_lifetime = other.longest_lifetime

    def for_namespaces(self, namespaces: Collection[str]) -> RevocationList:
        """The entries that can refuse a token of one of `namespaces` (unscoped jti
        entries included), without the lifetime record."""
        out = RevocationList()
        out._tokens = {
            k: t for k, t in self._tokens.items() if k[0] == ANY_NAMESPACE or k[0] in namespaces
        }
        out._agents = {k: e for k, e in self._agents.items() if k[0] in namespaces}
        return out

    # --- the stored and wire form ------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        """The JSON form: `tokensByNamespace` holds the jti entries by namespace; `tokens`
        repeats every jti (namespace left out) for readers from before the scoping."""
        legacy: dict[str, dt.datetime] = {}
        scoped: dict[str, dict[str, str]] = {}
        for (namespace, jti), expires in sorted(self._tokens.items()):
            legacy[jti] = max(legacy.get(jti, expires), expires)
            scoped.setdefault(namespace, {})[jti] = rfc3339_precise(expires)
        agents = []
        for (namespace, agent_id), (before, kept_until) in sorted(self._agents.items()):
            entry = {"namespace": namespace, "agentId": agent_id, "before": rfc3339_precise(before)}
            if kept_until is not None:
                entry["expiresAt"] = rfc3339_precise(kept_until)
            agents.append(entry)
        doc: dict[str, Any] = {
            "tokens": {jti: rfc3339_precise(t) for jti, t in sorted(legacy.items())},
            "tokensByNamespace": scoped,
            "agents": agents,
        }
        if self.longest_lifetime is not None:
            until = self.longest_lifetime.until
            doc["longestTokenLifetime"] = {
                "seconds": self.longest_lifetime.seconds,
                "issuedUntil": None if until is None else rfc3339_precise(until),
            }
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> RevocationList:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValidationError(
                f"revocations are not JSON: {error}", field="revocations"
            ) from None
        return cls.from_wire(doc)

    @classmethod
    def from_wire(cls, doc: Any) -> RevocationList:
        """The list from its decoded JSON form (what `to_wire` wrote, or the form from
        before scoping: a jti only in `tokens` refuses that jti in every namespace)."""
        if not isinstance(doc, dict):
            raise ValidationError("revocations must be an object", field="revocations")
        out = cls()
        scoped = doc.get("tokensByNamespace", {})
        if not isinstance(scoped, dict):
            raise ValidationError(
                "must map namespace to {jti: expiry}", field="revocations.tokensByNamespace"
            )
        seen: set[str] = set()
        for namespace, entries in scoped.items():
            where = f"revocations.tokensByNamespace.{namespace}"
            if not isinstance(entries, dict):
                raise ValidationError("must map jti to expiry", field=where)
            for jti, expires in entries.items():
                out.revoke_token(str(jti), _parse_time(expires, f"{where}.{jti}"), str(namespace))
                seen.add(str(jti))
        tokens = doc.get("tokens", {})
        if not isinstance(tokens, dict):
            raise ValidationError("must map jti to expiry", field="revocations.tokens")
        for jti, expires in tokens.items():
            moment = _parse_time(expires, f"revocations.tokens.{jti}")
            if str(jti) not in seen:  # written before scoping, or by an older writer since
                out.revoke_token(str(jti), moment, ANY_NAMESPACE)
        agents = doc.get("agents", [])
        if not isinstance(agents, list):
            raise ValidationError("must be a list", field="revocations.agents")
        for i, entry in enumerate(agents):
            where = f"revocations.agents[{i}]"
            if not isinstance(entry, dict) or not {"namespace", "agentId", "before"} <= set(entry):
                raise ValidationError("needs namespace, agentId and before", field=where)
            for name in ("namespace", "agentId"):
                if not isinstance(entry[name], str) or not entry[name]:
                    raise ValidationError(
                        f"{name} must be a non-empty string", field=f"{where}.{name}"
                    )
            expires = entry.get("expiresAt")
            out.revoke_agent(
                entry["namespace"],
                entry["agentId"],
                _parse_time(entry["before"], f"{where}.before"),
                None if expires is None else _parse_time(expires, f"{where}.expiresAt"),
            )
        out.longest_lifetime = _lifetime_from_wire(doc.get("longestTokenLifetime"))
        return out

    def __len__(self) -> int:
        return len(self._tokens) + len(self._agents)


def _lifetime_from_wire(value: Any) -> IssuedLifetime | None:
    if value is None:
        return None
    where = "revocations.longestTokenLifetime"
    seconds = value.get("seconds") if isinstance(value, dict) else None
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds < 0:
        raise ValidationError("needs seconds (a non-negative integer) and issuedUntil", field=where)
    until = value.get("issuedUntil")
    return IssuedLifetime(
        seconds, None if until is None else _parse_time(until, f"{where}.issuedUntil")
    )


def rfc3339_precise(moment: dt.datetime) -> str:
    """RFC 3339 keeping microseconds: `before` must not move earlier when stored."""
    if moment.microsecond == 0:
        return rfc3339(moment)
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
