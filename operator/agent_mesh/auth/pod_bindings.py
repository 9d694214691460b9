"""Which pod a mesh token was issued to: the IP of the pod whose ServiceAccount token was
exchanged for it (TokenReview names the pod, the apiserver gives its IP).

The heartbeat route uses it to decide whether an endpoint an agent reports is its own
(docs/security.md, "Outbound requests"). Kept in memory for the token's lifetime: after an
operator restart a pod's reported endpoint is not used until it exchanges again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

MAX_BINDINGS: Final = 100_000


class PodBindings:
    """jti → pod IP, forgotten when the token expires (or, past MAX_BINDINGS, oldest
    first)."""

    def __init__(self, max_entries: int = MAX_BINDINGS) -> None:
        self._by_jti: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._max = max_entries

    def bind(self, jti: str, pod_ip: str, expires_at: int, now: int) -> None:
        self._by_jti[jti] = (pod_ip, expires_at)
        # tokens are issued with one lifetime, so insertion order is expiry order
        while self._by_jti:
            _, (_, exp) = next(iter(self._by_jti.items()))
            if exp > now and len(self._by_jti) <= self._max:
                break
            self._by_jti.popitem(last=False)

    def pod_ip(self, jti: str, now: int) -> str | None:
        found = self._by_jti.get(jti)
        if found is None or found[1] <= now:
            return None
        return found[0]
