"""Abuse limits of the mesh API: token buckets on token exchange and on failed
authentication, answered `429` with `Retry-After` and the standard JSON error.

- every `POST /v1/token` from a source address takes from that source's bucket;
- every token issued to an agent takes from that agent's bucket. Only a proven identity is
  charged (after the credential or ServiceAccount token checked out), so nobody can spend
  another agent's budget and lock it out;
- every failed authentication (a 401 on any route) takes from the source's failure bucket;
  while it is empty, the source's requests get 429 before any token is checked (probes and
  the JWKS excepted).

Refusals are counted in `agentmesh_mesh_requests_throttled_total{limit}` and audited as
`request.throttled`, summarised: at most one record per limit and key every
REPORT_SECONDS, carrying how many refusals it stands for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from agent_mesh.auth.audit import AuditLog
from agent_mesh.domain.errors import TooManyRequestsError
from agent_mesh.domain.ratelimit import (
    DEFAULT_MAX_KEYS,
    MonotonicClock,
    Rate,
    TokenBuckets,
    retry_after_seconds,
)
from agent_mesh.observability.metrics import REQUESTS_THROTTLED

REPORT_SECONDS: Final = 10.0
UNLIMITED_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics", "/.well-known/jwks.json"})
"""Routes that check no credential: never refused for a source's failures."""
TOKEN_PER_SOURCE: Final = "token-exchange-per-source"  # noqa: S105  (a limit name)
TOKEN_PER_AGENT: Final = "token-exchange-per-agent"  # noqa: S105  (a limit name)
FAILURES_PER_SOURCE: Final = "auth-failures-per-source"


@dataclass(frozen=True, slots=True)
class AbuseLimits:
    """The rates (operator config `token_exchange_*`, `auth_failure_*`); generous defaults,
    so a fleet of agents starting at once from one node is not throttled."""

    token_per_source: Rate = field(default_factory=lambda: Rate(200, 50))
    token_per_agent: Rate = field(default_factory=lambda: Rate(20, 0.5))
    failures_per_source: Rate = field(default_factory=lambda: Rate(100, 10))
    max_keys: int = DEFAULT_MAX_KEYS


class AbuseGuard:
    """The buckets of AbuseLimits, and the audit of what they refuse."""

    def __init__(
        self, limits: AbuseLimits, audit: AuditLog, clock: MonotonicClock = time.monotonic
    ) -> None:
        self.limits = limits
        self._audit = audit
        self._clock = clock
        self._token_sources = TokenBuckets(
            limits.token_per_source, max_keys=limits.max_keys, clock=clock
        )
        self._token_agents = TokenBuckets(
            limits.token_per_agent, max_keys=limits.max_keys, clock=clock
        )
        self._failures = TokenBuckets(
            limits.failures_per_source, max_keys=limits.max_keys, clock=clock
        )
        # (limit, key) → (when last audited, refusals since): bounded like the buckets
        self._reported: dict[tuple[str, str], tuple[float, int]] = {}
        self._refused = {
            name: REQUESTS_THROTTLED.labels(limit=name)
            for name in (TOKEN_PER_SOURCE, TOKEN_PER_AGENT, FAILURES_PER_SOURCE)
        }

    def admit(self, request: web.Request) -> None:
        """Before any route: refuse a source whose failure budget is spent."""
        if request.path in UNLIMITED_PATHS:
            return
        source = _source(request)
        message = f"too many failed authentications from {source}"
        self._enforce(
            FAILURES_PER_SOURCE, source, self._failures.wait(source), message, source=source
        )

    def failed(self, request: web.Request) -> None:
        """After a route answered 401: one failure for the source."""
        self._failures.take(_source(request))

    def token_exchange(self, request: web.Request) -> None:
        """At `POST /v1/token`, before the body is read."""
        source = _source(request)
        message = f"too many token requests from {source}"
        self._enforce(
            TOKEN_PER_SOURCE, source, self._token_sources.take(source), message, source=source
        )

    def token_issue(self, namespace: str, agent_id: str) -> None:
        """Before a token is signed for a caller proven to be `namespace/agent_id`."""
        key = f"{namespace}/{agent_id}"
        message = f"too many tokens issued to agent {key}"
        wait = self._token_agents.take(key)
        self._enforce(TOKEN_PER_AGENT, key, wait, message, namespace=namespace, agentId=agent_id)

    def _enforce(self, limit: str, key: str, wait: float, message: str, **fields: str) -> None:
        """Nothing when the bucket had room (`wait` 0); else count, audit (at most once
        per REPORT_SECONDS per key, with how many were suppressed) and refuse with 429."""
        if not wait:
            return
        self._refused[limit].inc()
        retry = retry_after_seconds(wait)
        now = self._clock()
        last, since = self._reported.pop((limit, key), (None, 0))
        if last is not None and now - last < REPORT_SECONDS:
            self._reported[(limit, key)] = (last, since + 1)
        else:
            while len(self._reported) >= self.limits.max_keys:
                del self._reported[next(iter(self._reported))]
            self._reported[(limit, key)] = (now, 0)
            self._audit.record(
                "request.throttled",
                f"{message}: refused for {retry} s",
                limit=limit,
                retryAfter=retry,
                suppressed=since,
                **fields,
            )
        raise TooManyRequestsError(
            f"{message}; retry after {retry} s", code="RateLimited", retry_after=retry
        )


GUARD: Final = web.AppKey("abuse_guard", AbuseGuard)


def _source(request: web.Request) -> str:
    """The peer address: proxies' forwarding headers are not trusted (anyone can set
    them); behind a proxy, every caller shares the proxy's budget."""
    return request.remote or "unknown"
