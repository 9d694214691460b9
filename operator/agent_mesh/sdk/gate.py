"""The agent's gate: checks every caller as the operator's own mesh API would, and fails
closed.

- A caller's token must be addressed to this agent (`aud` `<namespace>/<agentId>`, its own
  identity): a token meant for the mesh API or for another agent is refused
  (`WrongAudience`), so a token forwarded from elsewhere is worth nothing here.

- The gate's own namespace and agentId come from the agent's configuration (in a pod
  without them, from its first token exchange) and never change afterwards: a caller's
  claims never stand in for them, not at start-up and not after a refused token.
- Until its identity, the operator's signing keys, the ACLPolicies in force in its
  namespace and the revocation list have all loaded once, every call is refused with 503
  `GateNotReady` (and `Retry-After`).
- Every `sync_seconds` all four are pulled again. The key set is replaced, not merged: a
  key the operator dropped stops verifying. Each rotated-out key carries its `retireAt`
  and stops verifying at that moment, with or without a sync.
- A sync that keeps failing for `stale_seconds` (default three `sync_seconds`) is reported:
  `ready` turns false (the agent's /readyz), `agentmesh_agent_sync_stale` is 1, and an
  error is logged once; calls are still decided on the state last loaded, which the log
  line and the metric say is old. A later good sync clears it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from typing import Any, Final

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from agent_mesh.auth.jwks import PublicKeySet
from agent_mesh.auth.revocation import RevocationList
from agent_mesh.auth.tokens import MeshClaims, TokenVerifier, bearer_token, recipient_audience
from agent_mesh.domain.acl import MeshCall, PolicyIndex, policy_from_spec
from agent_mesh.domain.clock import Clock, SystemClock, rfc3339
from agent_mesh.domain.errors import (
    AuthError,
    ForbiddenError,
    UnavailableError,
    ValidationError,
)
from agent_mesh.sdk.identity import TokenSource
from agent_mesh.sdk.meshapi import call_mesh

logger = logging.getLogger("agent_mesh.sdk")
JWKS_REFETCH_SECONDS: Final = 10.0
SYNC_SECONDS: Final = 30.0
STALE_AFTER_SYNCS: Final = 3
"""Default staleness bound, in sync intervals."""
FIRST_RETRY_SECONDS: Final = 0.5
"""Until the first sync succeeds it is retried from this delay, doubling up to sync_seconds."""
REQUEST_TIMEOUT: Final = aiohttp.ClientTimeout(total=10)
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Gate:
    """authenticate() then authorize() on every inbound call; `run()` keeps it loaded."""

    def __init__(
        self,
        tokens: TokenSource,
        sync_seconds: float = SYNC_SECONDS,
        *,
        stale_seconds: float | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._tokens = tokens
        self.sync_seconds = sync_seconds
        self.stale_seconds = (
            stale_seconds if stale_seconds is not None else STALE_AFTER_SYNCS * sync_seconds
        )
        self.namespace: str | None = tokens.namespace
        """Ours, from configuration or the first exchange; never the caller's."""
        self.agent_id: str | None = tokens.agent_id
        self._clock = clock or SystemClock()
        self._keys: PublicKeySet | None = None
        self._keys_fetched = 0.0
        self._revocations = RevocationList()
        self._policies = PolicyIndex()
        self._verifier: TokenVerifier | None = None  # made once our identity (the aud) is fixed
        self._loaded = asyncio.Event()
        self._last_sync: dt.datetime | None = None
        self._stale_reported = False
        self._retry_in = FIRST_RETRY_SECONDS
        self.registry = registry or CollectorRegistry()
        """The gate's metrics (the agent serves them at /metrics)."""
        self._sync_failures = Counter(
            "agentmesh_agent_sync_failures",
            "Failed pulls of identity, keys, policies and revocations from the mesh API.",
            registry=self.registry,
        )
        Gauge(
            "agentmesh_agent_sync_age_seconds",
            "Seconds since the gate last loaded keys, policies and revocations (-1: never).",
            registry=self.registry,
        ).set_function(self._sync_age)
        Gauge(
            "agentmesh_agent_sync_stale",
            "1 when the last good sync is older than the staleness bound, else 0.",
            registry=self.registry,
        ).set_function(lambda: float(self.stale))
        Gauge(
            "agentmesh_agent_gate_loaded",
            "1 once identity, keys, policies and revocations have loaded, else 0.",
            registry=self.registry,
        ).set_function(lambda: float(self.loaded))

    # --- state --------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """Identity, keys, policies and revocations have all loaded at least once."""
        return self._loaded.is_set()

    @property
    def stale(self) -> bool:
        """Loaded, but the last good sync is older than `stale_seconds`."""
        age = self._sync_age()
        return age >= 0 and age >= self.stale_seconds

    @property
    def ready(self) -> bool:
        return self.loaded and not self.stale

    async def wait_loaded(self) -> None:
        await self._loaded.wait()

    def _sync_age(self) -> float:
        if self._last_sync is None:
            return -1.0
        return (self._clock.now() - self._last_sync).total_seconds()

    def _require_loaded(self) -> None:
        if not self.loaded:
            raise UnavailableError(
                "the agent has not loaded its identity, the mesh's signing keys, policies "
                "and revocations yet: it cannot check callers",
                code="GateNotReady",
                retry_after=math.ceil(self._retry_in),
            )

    def _key_set(self) -> PublicKeySet:
        if self._keys is None:
            raise AuthError("the mesh's signing keys are not loaded yet", code="KeysNotLoaded")
        return self._keys

    # --- checking callers ---------------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> MeshClaims:
        self._require_loaded()
        verifier = self._verifier
        assert verifier is not None  # made by the sync that loaded the gate
        token = bearer_token(authorization)
        try:
            return verifier.verify(token)
        except AuthError as error:
            if error.code != "UnknownKey":
                raise
        await self.refresh_keys()  # the operator may have rotated its key
        return verifier.verify(token)

    def authorize(self, caller: MeshClaims, call: MeshCall) -> None:
        self._require_loaded()
        assert self.namespace is not None  # set before the first sync completes
        decision = self._policies.decide(
            caller.agent_type, caller.namespace, call.action, call.resource, self.namespace
        )
        if not decision.allowed:
            raise ForbiddenError(decision.reason, code="AccessDenied")

    # --- pulling from the operator ------------------------------------------------------

    async def refresh_keys(self) -> None:
        """Fetch the operator's JWKS, replacing the key set (at most every
        JWKS_REFETCH_SECONDS: an unknown kid is no way to make the agent hammer the mesh)."""
        now = time.monotonic()
        if self._keys is not None and now - self._keys_fetched < JWKS_REFETCH_SECONDS:
            return
        self._keys_fetched = now
        self._keys = PublicKeySet.from_jwks(await self._get("/.well-known/jwks.json", auth=False))

    async def sync(self) -> None:
        """Pull identity, keys, policies and revocations; adopt them only when all four
        came (a half-done sync changes nothing)."""
        await self._tokens.token()
        namespace, agent_id = self._own_identity()
        keys = PublicKeySet.from_jwks(await self._get("/.well-known/jwks.json", auth=False))
        answer = await self._get(f"/v1/acl/{namespace}")
        policies = PolicyIndex()
        for item in answer["policies"]:
            name = item["name"]
            policies.upsert(
                namespace, name, _EPOCH, policy_from_spec(namespace, name, item["spec"])
            )
        for item in answer.get("admitted", ()):  # callers' side of what our namespace admits
            ns, name = item["namespace"], item["name"]
            policies.upsert(ns, name, _EPOCH, policy_from_spec(ns, name, item["spec"]))
        revocations = RevocationList.from_wire(await self._get("/v1/revocations"))
        self.namespace, self.agent_id = namespace, agent_id
        if self._verifier is None:
            self._verifier = TokenVerifier(
                self._key_set,
                self._clock,
                self._revocations,
                audience=recipient_audience(namespace, agent_id),
            )
        self._keys, self._keys_fetched = keys, time.monotonic()
        self._policies = policies
        self._revocations.merge(revocations)
        self._last_sync = self._clock.now()
        self._retry_in = FIRST_RETRY_SECONDS
        if self._stale_reported:
            logger.warning("policy sync recovered: the agent checks callers on fresh state")
            self._stale_reported = False
        if not self.loaded:
            logger.info(
                "gate loaded for agent %s/%s: %d keys, %d policies",
                namespace,
                agent_id,
                len(keys.keys),
                len(answer["policies"]),
            )
            self._loaded.set()

    def _own_identity(self) -> tuple[str, str]:
        """Ours, as configured; the issued token must agree (in a pod without
        configuration, the first token decides once and for all)."""
        issued = self._tokens.identity
        if issued is None:
            raise UnavailableError("no mesh token yet", code="NoIdentity")
        for name, ours, theirs in (
            ("namespace", self.namespace, issued.namespace),
            ("agentId", self.agent_id, issued.agent_id),
        ):
            if ours is not None and ours != theirs:
                raise ValidationError(
                    f"the mesh issued this agent a token for {name} {theirs!r}, but the agent "
                    f"is configured as {ours!r}: it will not check callers as someone else",
                    field=name,
                    code="IdentityMismatch",
                )
        return issued.namespace, issued.agent_id

    async def sync_once(self) -> bool:
        """One sync; a failure is counted, logged, and reported once it makes the gate
        stale. Never raises (but for cancellation)."""
        try:
            await self.sync()
        except Exception as error:  # the loop must outlive any failure; each is reported
            self._sync_failed(error)
            return False
        return True

    async def run(self) -> None:
        """Sync until cancelled: until loaded, retry quickly (doubling from
        FIRST_RETRY_SECONDS), then every `sync_seconds`."""
        while True:
            if await self.sync_once():
                await asyncio.sleep(self.sync_seconds)
            else:
                await asyncio.sleep(self._retry_in)
                self._retry_in = min(self._retry_in * 2, self.sync_seconds)

    def _sync_failed(self, error: Exception) -> None:
        self._sync_failures.inc()
        if not self.loaded:
            logger.warning("gate not ready, refusing calls: cannot load from the mesh: %s", error)
            self._retry_in = max(self._retry_in, getattr(error, "retry_after", None) or 0)
            return
        self._retry_in = self.sync_seconds
        if self.stale and not self._stale_reported:
            assert self._last_sync is not None
            logger.error(
                "policy sync has failed for %.0f s (bound %.0f s): the agent still decides on "
                "the policies, keys and revocations of %s, which may be out of date: %s",
                self._sync_age(),
                self.stale_seconds,
                rfc3339(self._last_sync),
                error,
            )
            self._stale_reported = True
        else:
            logger.warning("could not refresh keys, ACL policies and revocations: %s", error)

    async def _get(self, path: str, auth: bool = True) -> Any:
        async with aiohttp.ClientSession() as session:
            return await call_mesh(
                session,
                self._tokens,
                "GET",
                path,
                authenticated=auth,
                client_timeout=REQUEST_TIMEOUT,
            )
