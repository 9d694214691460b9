"""The agent's gate: checks every caller as the operator's own mesh API would.

A caller's token must be addressed to this agent (`aud` `<namespace>/<agentId>`, from the
agent's own identity): a token meant for the mesh API or for another agent is refused
(`WrongAudience`), so a token forwarded from elsewhere is worth nothing here. It is
verified against the operator's JWKS (refetched when a token names a
key it does not know, at most every few seconds, so a rotation needs no restart). The
ACL is decided on the ACLPolicies in force in the agent's namespace and the revocation
list, both pulled from the operator every `sync_seconds`. Until the first pull, and for a
custom caller type without a policy, the built-in defaults apply and unknown types are
refused: the gate fails closed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any, Final

import aiohttp

from agent_mesh.auth.jwks import PublicKeySet
from agent_mesh.auth.revocation import RevocationList
from agent_mesh.auth.tokens import MeshClaims, TokenVerifier, bearer_token, recipient_audience
from agent_mesh.domain.acl import MeshCall, PolicyIndex, policy_from_spec
from agent_mesh.domain.clock import SystemClock
from agent_mesh.domain.errors import AuthError, ForbiddenError, MeshError
from agent_mesh.sdk.identity import TokenSource
from agent_mesh.sdk.meshapi import call_mesh

logger = logging.getLogger("agent_mesh.sdk")
JWKS_REFETCH_SECONDS: Final = 10.0
SYNC_SECONDS: Final = 30.0
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Gate:
    """authenticate() then authorize() on every inbound call."""

    def __init__(self, tokens: TokenSource, sync_seconds: float = SYNC_SECONDS) -> None:
        self._tokens = tokens
        self.sync_seconds = sync_seconds
        self._keys: PublicKeySet | None = None
        self._keys_fetched = 0.0
        self._revocations = RevocationList()
        self._policies = PolicyIndex()
        self._verifier: TokenVerifier | None = None  # once our identity (the aud) is known

    def _key_set(self) -> PublicKeySet:
        if self._keys is None:
            raise AuthError("the mesh's signing keys are not loaded yet", code="KeysNotLoaded")
        return self._keys

    async def authenticate(self, authorization: str | None) -> MeshClaims:
        token = bearer_token(authorization)
        verifier = self._verifier or await self._own_verifier()
        if self._keys is None:
            await self.refresh_keys()
        try:
            return verifier.verify(token)
        except AuthError as error:
            if error.code != "UnknownKey":
                raise
        await self.refresh_keys()  # the operator may have rotated its key
        return verifier.verify(token)

    async def _own_verifier(self) -> TokenVerifier:
        """A verifier of tokens addressed to this agent, made once its identity is known
        (the agent's identity does not change while it runs)."""
        ours = self._tokens.identity
        if ours is None:
            await self._tokens.token()
            ours = self._tokens.identity
            assert ours is not None
        self._verifier = TokenVerifier(
            self._key_set,
            SystemClock(),
            self._revocations,
            audience=recipient_audience(ours.namespace, ours.agent_id),
        )
        return self._verifier

    def authorize(self, caller: MeshClaims, call: MeshCall) -> None:
        ours = self._tokens.identity
        decision = self._policies.decide(
            caller.agent_type,
            caller.namespace,
            call.action,
            call.resource,
            ours.namespace if ours is not None else caller.namespace,
        )
        if not decision.allowed:
            raise ForbiddenError(decision.reason, code="AccessDenied")

    # --- pulling from the operator ----------------------------------------------------

    async def refresh_keys(self) -> None:
        """Fetch the operator's JWKS (at most every JWKS_REFETCH_SECONDS)."""
        now = time.monotonic()
        if self._keys is not None and now - self._keys_fetched < JWKS_REFETCH_SECONDS:
            return
        self._keys_fetched = now
        self._keys = PublicKeySet.from_jwks(await self._get("/.well-known/jwks.json", auth=False))

    async def sync(self) -> None:
        """Pull the policies in force in our namespace and the revocation list."""
        await self._tokens.token()
        ours = self._tokens.identity
        assert ours is not None
        answer = await self._get(f"/v1/acl/{ours.namespace}")
        policies = PolicyIndex()
        for item in answer["policies"]:
            name = item["name"]
            policies.upsert(
                ours.namespace, name, _EPOCH, policy_from_spec(ours.namespace, name, item["spec"])
            )
        for item in answer.get("admitted", ()):  # callers' side of what our namespace admits
            ns, name = item["namespace"], item["name"]
            policies.upsert(ns, name, _EPOCH, policy_from_spec(ns, name, item["spec"]))
        self._policies = policies
        self._revocations.merge(RevocationList.from_wire(await self._get("/v1/revocations")))

    async def sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sync_seconds)
            try:
                await self.sync()
            except (MeshError, aiohttp.ClientError, KeyError, TypeError) as error:
                logger.warning("could not refresh ACL policies and revocations: %s", error)

    async def _get(self, path: str, auth: bool = True) -> Any:
        async with aiohttp.ClientSession() as session:
            return await call_mesh(session, self._tokens, "GET", path, authenticated=auth)
