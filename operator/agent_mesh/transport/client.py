"""The transport client: one pooled aiohttp session per target agent.

Retries are for failures that cannot have reached the agent's handler, or that the agent
says are transient: connection errors and 502/503/504, after `retry_delay · 2^(n-1)`.
A 4xx is the caller's mistake and a timeout may have been executed: neither is retried.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import aiohttp
import pydantic

from agent_mesh.domain.errors import DispatchError
from agent_mesh.domain.message import Message
from agent_mesh.observability.metrics import (
    TRANSPORT_ACTIVE,
    TRANSPORT_DURATION,
    TRANSPORT_REQUESTS,
)

RETRYABLE_STATUS: Final = frozenset({502, 503, 504})
MESSAGES_PATH: Final = "/v1/messages"

TokenProvider = Callable[[], Awaitable[str]]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """DESIGN §5 defaults."""

    timeout_seconds: float = 30.0
    retries: int = 3
    retry_delay_seconds: float = 1.0
    max_connections_per_agent: int = 10
    keepalive_seconds: float = 30.0
    """Idle connections older than this are closed (stale connections)."""


class Outcome(StrEnum):
    OK = "ok"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    BAD_RESPONSE = "bad_response"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What happened to one message sent to one target."""

    target: str
    outcome: Outcome
    attempts: int
    status: int | None = None
    response: Message | None = None
    error: str | None = None


class Transport:
    """Sends envelopes to agents' endpoints; close() when done."""

    def __init__(
        self,
        config: TransportConfig | None = None,
        token: TokenProvider | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.config = config or TransportConfig()
        self._token = token
        self._sleep = sleep
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def _session(self, endpoint: str) -> aiohttp.ClientSession:
        session = self._sessions.get(endpoint)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.config.max_connections_per_agent,
                keepalive_timeout=self.config.keepalive_seconds,
            )
            session = aiohttp.ClientSession(
                base_url=endpoint,
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds),
                json_serialize=json.dumps,
            )
            self._sessions[endpoint] = session
        return session

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    async def send(self, endpoint: str, message: Message, path: str = MESSAGES_PATH) -> Delivery:
        """POST the envelope, retrying where safe; never raises for the target's failures."""
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {await self._token()}"
        body = json.dumps(message.to_wire())
        attempts = 0
        while True:
            attempts += 1
            delivery = await self._attempt(endpoint, path, body, headers, attempts)
            retryable = delivery.outcome is Outcome.CONNECT_ERROR or (
                delivery.outcome is Outcome.HTTP_ERROR and delivery.status in RETRYABLE_STATUS
            )
            if not retryable or attempts > self.config.retries:
                TRANSPORT_REQUESTS.labels(outcome=delivery.outcome.value).inc()
                return delivery
            await self._sleep(self.config.retry_delay_seconds * 2 ** (attempts - 1))

    async def _attempt(
        self, endpoint: str, path: str, body: str, headers: Mapping[str, str], attempts: int
    ) -> Delivery:
        started = time.perf_counter()
        TRANSPORT_ACTIVE.inc()
        try:
            async with self._session(endpoint).post(path, data=body, headers=headers) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    return Delivery(
                        endpoint,
                        Outcome.HTTP_ERROR,
                        attempts,
                        status=resp.status,
                        error=raw[:512].decode(errors="replace"),
                    )
                if not raw:
                    return Delivery(endpoint, Outcome.OK, attempts, status=resp.status)
                try:
                    answer = Message.model_validate_json(raw)
                except pydantic.ValidationError as error:
                    return Delivery(
                        endpoint,
                        Outcome.BAD_RESPONSE,
                        attempts,
                        status=resp.status,
                        error=f"response is not a mesh message: {error.errors()[0]['msg']}",
                    )
                return Delivery(endpoint, Outcome.OK, attempts, status=resp.status, response=answer)
        except TimeoutError:
            return Delivery(
                endpoint,
                Outcome.TIMEOUT,
                attempts,
                error=f"no response within {self.config.timeout_seconds} s",
            )
        except aiohttp.ClientConnectionError as error:
            return Delivery(endpoint, Outcome.CONNECT_ERROR, attempts, error=str(error))
        finally:
            TRANSPORT_ACTIVE.dec()
            TRANSPORT_DURATION.observe(time.perf_counter() - started)

    async def request(self, endpoint: str, message: Message) -> Message:
        """Request/response: the agent's reply, correlated to `message`, or DispatchError."""
        delivery = await self.send(endpoint, message)
        if delivery.outcome is not Outcome.OK or delivery.response is None:
            raise DispatchError(
                f"{endpoint}: {delivery.outcome.value}"
                + (f" {delivery.status}" if delivery.status else "")
                + (f": {delivery.error}" if delivery.error else ""),
                code=f"Dispatch{delivery.outcome.value.title().replace('_', '')}",
            )
        if delivery.response.correlation_id != message.message_id:
            raise DispatchError(
                f"{endpoint}: reply correlates to {delivery.response.correlation_id!r}, "
                f"not to request {message.message_id!r}",
                code="DispatchBadResponse",
            )
        return delivery.response

    async def broadcast(self, targets: Mapping[str, str], message: Message) -> dict[str, Delivery]:
        """Send to every target (name → endpoint) in parallel; one outcome per target."""
        names = list(targets)
        results: list[Any] = await asyncio.gather(
            *(self.send(targets[name], message) for name in names)
        )
        return dict(zip(names, results, strict=True))
