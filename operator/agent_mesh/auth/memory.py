"""In-process stand-ins for the cluster-backed stores, for running the authority without a
cluster: benchmarks and tests of the HTTP layer. They keep state exactly as the real
stores do, only in memory; the operator itself always uses the kube/ implementations."""

from __future__ import annotations

import datetime as dt

from agent_mesh.auth.authority import AgentFetcher, ReviewedToken
from agent_mesh.auth.keys import KeyRing
from agent_mesh.auth.revocation import RevocationList
from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.errors import AuthError


class MemoryKeyStore:
    def __init__(self) -> None:
        self.ring: KeyRing | None = None
        self.rotation_requested: str | None = None
        self.saves = 0

    async def load(self) -> KeyRing | None:
        return self.ring

    async def save(self, ring: KeyRing) -> KeyRing:
        self.ring = ring
        self.rotation_requested = None
        self.saves += 1
        return ring


class MemoryRevocationStore:
    def __init__(self) -> None:
        self.stored = RevocationList()

    async def load(self) -> RevocationList:
        return RevocationList.from_json(self.stored.to_json())

    async def save(self, revocations: RevocationList, now: dt.datetime) -> RevocationList:
        self.stored.merge(revocations)
        self.stored.prune(now)
        return RevocationList.from_json(self.stored.to_json())


class StaticTokenReviewer:
    """Accepts exactly the ServiceAccount tokens it was given, like a TokenReview would."""

    def __init__(self) -> None:
        self.tokens: dict[str, ReviewedToken] = {}
        self.pod_labels: dict[tuple[str, str], str] = {}
        self.pod_ips: dict[tuple[str, str], str] = {}

    async def review(self, token: str, audience: str) -> ReviewedToken:
        found = self.tokens.get(token)
        if found is None:
            raise AuthError(
                "serviceAccountToken was refused by TokenReview: invalid bearer token",
                field="serviceAccountToken",
                code="TokenReviewFailed",
            )
        return found

    async def pod_agent_label(self, namespace: str, pod: str) -> str | None:
        return self.pod_labels.get((namespace, pod))

    async def pod_ip(self, namespace: str, pod: str) -> str | None:
        return self.pod_ips.get((namespace, pod))


def registry_fetcher(registry: AgentRegistry) -> AgentFetcher:
    """An AgentFetcher that only knows the registry (no apiserver to ask)."""

    async def fetch(namespace: str, agent_id: str) -> AgentRecord | None:
        return registry.get(namespace, agent_id)

    return fetch
