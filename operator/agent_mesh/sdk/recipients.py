"""Recipient tokens: what an agent sends to a peer instead of its own mesh token.

An agent's mesh-API token never goes to another agent. For each recipient it asks the
operator to exchange it (`POST /v1/token`, grantType token-exchange, RFC 8693 in shape)
for a short-lived token addressed to that recipient alone (`aud` `<namespace>/<agentId>`),
so a token an agent receives is worth nothing anywhere else: not at the operator, not at
a third agent. Tokens are cached per recipient and renewed once 80% of their lifetime has
passed, so the exchange is off the per-message path; a broadcast asks for all the tokens
it lacks in one exchange.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import aiohttp

from agent_mesh.auth.tokens import (
    EXCHANGE_MAX_AUDIENCES,
    GRANT_TOKEN_EXCHANGE,
    TOKEN_TYPE_JWT,
    recipient_audience,
)
from agent_mesh.domain.errors import AuthError, MeshError
from agent_mesh.sdk.identity import RENEW_AT, TokenSource
from agent_mesh.sdk.meshapi import call_mesh, error_from_wire

CACHE_MAX: Final = 10_000
"""Recipients whose tokens are kept; the oldest entry goes first past this."""
STALE_TOKEN_CODES: Final = frozenset(
    {"TokenExpired", "TokenNotYetValid", "TokenRevoked", "UnknownKey", "WrongAudience"}
)
"""A recipient's refusal codes that mean: this token will not do, get a new one."""

Recipient = tuple[str, str]
"""(namespace, agentId)."""


class RecipientTokens:
    """`await recipients.token_for(namespace, agent_id)`: a valid token for that agent,
    from the cache or a new exchange; close() when done."""

    def __init__(self, tokens: TokenSource, clock: Callable[[], float] = time.monotonic) -> None:
        self._tokens = tokens
        self._clock = clock
        self._held: dict[Recipient, tuple[str, float]] = {}  # → (token, renew at)
        self._asked: dict[Recipient, asyncio.Future[str]] = {}  # exchanges under way
        self._session: aiohttp.ClientSession | None = None
        self.exchanges = 0
        """Exchange calls made (for tests and benchmarks)."""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def forget(self, namespace: str, agent_id: str) -> None:
        """Drop the recipient's token (it was refused): the next call exchanges again."""
        self._held.pop((namespace, agent_id), None)

    async def token_for(self, namespace: str, agent_id: str) -> str:
        """A token addressed to agent `namespace/agent_id`; MeshError if the operator
        refuses the exchange (e.g. `RecipientUnknown`)."""
        held = self._held.get((namespace, agent_id))
        if held is not None and self._clock() < held[1]:
            return held[0]
        outcome = (await self.tokens_for([(namespace, agent_id)]))[(namespace, agent_id)]
        if isinstance(outcome, MeshError):
            raise outcome
        return outcome

    async def tokens_for(self, recipients: Iterable[Recipient]) -> dict[Recipient, str | MeshError]:
        """A token (or the operator's refusal) per recipient; the ones not cached are
        exchanged together, EXCHANGE_MAX_AUDIENCES per call. A refusal of the caller's own
        token (not of one recipient) is raised."""
        now = self._clock()
        out: dict[Recipient, str | MeshError] = {}
        waits: dict[Recipient, asyncio.Future[str]] = {}
        missing: list[Recipient] = []
        for key in dict.fromkeys(recipients):
            held = self._held.get(key)
            if held is not None and now < held[1]:
                out[key] = held[0]
            elif key in self._asked:
                waits[key] = self._asked[key]
            else:
                missing.append(key)
        loop = asyncio.get_running_loop()
        for start in range(0, len(missing), EXCHANGE_MAX_AUDIENCES):
            chunk = missing[start : start + EXCHANGE_MAX_AUDIENCES]
            futures = {key: loop.create_future() for key in chunk}
            self._asked.update(futures)
            waits.update(futures)
            try:
                await self._exchange(futures)
            except BaseException as error:
                for future in futures.values():  # others may be waiting for these too
                    if future.done():
                        continue
                    if isinstance(error, Exception):
                        future.set_exception(error)
                        future.exception()  # retrieved: raised here, not lost
                    else:
                        future.cancel()
                raise
            finally:
                for key in chunk:
                    self._asked.pop(key, None)
        for key, future in waits.items():
            try:
                out[key] = await future
            except MeshError as error:
                out[key] = error
        return out

    async def _exchange(self, futures: dict[Recipient, asyncio.Future[str]]) -> None:
        audiences = {recipient_audience(*key): key for key in futures}
        body: dict[str, Any] = {
            "grantType": GRANT_TOKEN_EXCHANGE,
            "subjectTokenType": TOKEN_TYPE_JWT,
        }
        if len(audiences) == 1:
            body["audience"] = next(iter(audiences))
        else:
            body["audiences"] = list(audiences)
        started = self._clock()
        answer = await self._post(body)
        items = answer.get("tokens") if "tokens" in answer else [answer]
        for item in items:
            key = audiences.get(str(item.get("audience")))
            if key is None or futures[key].done():
                continue
            if "error" in item:
                futures[key].set_exception(
                    error_from_wire(int(item.get("status") or 400), item["error"])
                )
                continue
            token = str(item["accessToken"])
            self._keep(key, token, started + RENEW_AT * float(item["expiresIn"]))
            futures[key].set_result(token)
        for audience, key in audiences.items():
            if not futures[key].done():
                futures[key].set_exception(
                    MeshError(f"the token exchange did not answer for {audience}", field="audience")
                )

    async def _post(self, body: dict[str, Any]) -> Any:
        """POST the exchange; a refused subject token is renewed and sent once more."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self.exchanges += 1
        for attempt in range(2):
            body["subjectToken"] = await self._tokens.token()
            try:
                return await call_mesh(
                    self._session, self._tokens, "POST", "/v1/token", body=body, authenticated=False
                )
            except AuthError as error:
                if attempt or error.field != "subjectToken":
                    raise
                self._tokens.invalidate()  # revoked, rotated out: exchange the credential again
        raise AssertionError("unreachable")

    def _keep(self, key: Recipient, token: str, renew_at: float) -> None:
        if key not in self._held and len(self._held) >= CACHE_MAX:
            del self._held[next(iter(self._held))]
        self._held[key] = (token, renew_at)
