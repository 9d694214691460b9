"""Revoked tokens (by jti) and revoked agents (every token issued before a time).

Entries expire once no token they could match can still be valid, so the list stays
small; it is persisted by a store (a ConfigMap) and merged, never overwritten.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from agent_mesh.domain.clock import parse_rfc3339, rfc3339
from agent_mesh.domain.errors import ValidationError

if TYPE_CHECKING:
    from agent_mesh.auth.tokens import MeshClaims


def _parse_time(value: Any, field: str) -> dt.datetime:
    moment = parse_rfc3339(value)
    if moment is None:
        raise ValidationError(f"{value!r} is not an RFC 3339 time with a zone", field=field)
    return moment


class RevocationList:
    """In-memory revocations with O(1) checks."""

    def __init__(self) -> None:
        self._tokens: dict[str, dt.datetime] = {}  # jti → when the token expires anyway
        self._agents: dict[tuple[str, str], dt.datetime] = {}  # (ns, agentId) → before

    def revoke_token(self, jti: str, expires_at: dt.datetime) -> None:
        """Refuse the token `jti`; the entry is kept until the token would expire anyway."""
        current = self._tokens.get(jti)
        self._tokens[jti] = expires_at if current is None else max(current, expires_at)

    def revoke_agent(self, namespace: str, agent_id: str, before: dt.datetime) -> None:
        """Refuse every token of the agent issued before `before` (the later one wins)."""
        key = (namespace, agent_id)
        current = self._agents.get(key)
        self._agents[key] = before if current is None else max(current, before)

    def is_revoked(self, claims: MeshClaims) -> bool:
        """Two dictionary lookups; `iat` is whole seconds, so the second of `before` counts."""
        if claims.jti in self._tokens:
            return True
        before = self._agents.get((claims.namespace, claims.sub))
        return before is not None and claims.iat < before.timestamp()

    def prune(
        self, now: dt.datetime, max_token_lifetime: dt.timedelta, leeway: dt.timedelta
    ) -> None:
        """Drop entries no still-valid token can match (past expiry, or lifetime, + leeway)."""
        self._tokens = {j: t for j, t in self._tokens.items() if t + leeway > now}
        horizon = max_token_lifetime + leeway
        self._agents = {k: b for k, b in self._agents.items() if b + horizon > now}

    def merge(self, other: RevocationList) -> None:
        """Union with another writer's view, keeping the later expiry and `before`."""
        for jti, expires in other._tokens.items():
            self.revoke_token(jti, expires)
        for (namespace, agent_id), before in other._agents.items():
            self.revoke_agent(namespace, agent_id, before)

    def to_json(self) -> str:
        return json.dumps(
            {
                "tokens": {jti: rfc3339_precise(t) for jti, t in sorted(self._tokens.items())},
                "agents": [
                    {"namespace": ns, "agentId": agent, "before": rfc3339_precise(before)}
                    for (ns, agent), before in sorted(self._agents.items())
                ],
            },
            indent=1,
        )

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
        """The list from its decoded JSON form (what `to_json` wrote)."""
        if not isinstance(doc, dict):
            raise ValidationError("revocations must be an object", field="revocations")
        out = cls()
        tokens = doc.get("tokens", {})
        if not isinstance(tokens, dict):
            raise ValidationError("must map jti to expiry", field="revocations.tokens")
        for jti, expires in tokens.items():
            out.revoke_token(str(jti), _parse_time(expires, f"revocations.tokens.{jti}"))
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
            out.revoke_agent(
                entry["namespace"],
                entry["agentId"],
                _parse_time(entry["before"], f"{where}.before"),
            )
        return out

    def __len__(self) -> int:
        return len(self._tokens) + len(self._agents)


def rfc3339_precise(moment: dt.datetime) -> str:
    """RFC 3339 keeping microseconds: `before` must not move earlier when stored."""
    if moment.microsecond == 0:
        return rfc3339(moment)
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
