"""Completion callbacks: when a submitted task ends, its answer is POSTed to the request's
`callbackUrl` (seed step 12, "notify the submitter").

Best effort by design: one try, a short timeout, no retry, and failures are only logged
and counted. A submitter that must not miss an answer polls `GET /v1/tasks/{id}` or
submits durable tasks. No credential is sent: the operator's own token may dispatch to
any agent, and a URL chosen by a submitter must never receive it. The receiver should
treat a callback as a hint and confirm through `GET /v1/tasks/{id}` when it matters.

Calls go through the mesh transport (pooled keep-alive connections per origin). Callback
origins are chosen by submitters, so the pool is rebuilt when it has served too many of
them, which bounds the connections held open.

A callback URL is a caller-supplied URL (egress class CALLER): `check` refuses it when
the task is submitted, and the transport checks again at each connection (the name may
resolve differently by then) and connects only to the address it checked. Redirects
are not followed; at most `RESPONSE_MAX_BYTES` of an answer is read (it is not used).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final
from urllib.parse import urlsplit

from agent_mesh.domain.background import Background
from agent_mesh.domain.egress import EgressClass, EgressPolicy
from agent_mesh.domain.errors import EgressRefusedError
from agent_mesh.observability.metrics import TASK_CALLBACKS
from agent_mesh.transport.client import Outcome, Transport, TransportConfig
from agent_mesh.transport.egress import EgressGuard

logger = logging.getLogger("agent_mesh.mesh.callbacks")
TIMEOUT_SECONDS: Final = 10.0
MAX_ORIGINS: Final = 256
"""Distinct origins one connection pool serves before it is replaced."""
RESPONSE_MAX_BYTES: Final = 64 * 1024
"""A callback's answer is not used; more than this is not even read."""


def split_url(url: str) -> tuple[str, str]:
    """(origin, path with query) of an http(s) URL, as the transport takes them."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return f"{parts.scheme}://{parts.netloc}", path


class CallbackNotifier:
    """POSTs answers to callback URLs in the background; `close()` waits for none of them."""

    def __init__(
        self, timeout_seconds: float = TIMEOUT_SECONDS, guard: EgressGuard | None = None
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self.guard = guard or EgressGuard(EgressPolicy())
        self._transport = self._new_transport()
        self._origins: set[str] = set()
        self._running = Background()

    def _new_transport(self) -> Transport:
        config = TransportConfig(
            timeout_seconds=self.timeout_seconds,
            retries=0,
            response_max_bytes=RESPONSE_MAX_BYTES,
        )
        return Transport(config, guard=self.guard)

    async def check(self, url: str) -> None:
        """EgressRefusedError (400, field callbackUrl) when the URL may not be called back:
        its form, its IP-literal host, or any address its host resolves to now."""
        try:
            await self.guard.check(EgressClass.CALLER, url, "callbackUrl")
        except EgressRefusedError as error:
            error.field = "callbackUrl"
            raise

    def notify(self, url: str, answer: dict[str, Any]) -> None:
        """Send `answer` to `url` soon; returns at once."""
        self._running.spawn(self._notify(url, answer))

    async def _notify(self, url: str, answer: dict[str, Any]) -> None:
        await self.send(url, answer)

    async def send(self, url: str, answer: dict[str, Any]) -> bool:
        """POST `answer` to `url` now, once; whether it was taken (logged when not)."""
        origin, path = split_url(url)
        transport = self._transport_for(origin)
        delivery = await transport.post(origin, path, answer, retries=0, egress=EgressClass.CALLER)
        ok = delivery.outcome is Outcome.OK
        TASK_CALLBACKS.labels(outcome="ok" if ok else "failed").inc()
        if not ok:
            logger.warning(
                "callback for task %s to %s failed (%s): %s",
                answer.get("id"),
                origin,
                delivery.status or delivery.outcome.value,
                delivery.error or "",
            )
        return ok

    def _transport_for(self, origin: str) -> Transport:
        if origin not in self._origins and len(self._origins) >= MAX_ORIGINS:
            old, self._transport = self._transport, self._new_transport()
            self._origins.clear()
            self._later_close(old)
        self._origins.add(origin)
        return self._transport

    def _later_close(self, transport: Transport) -> None:
        """Close a replaced pool once calls already on it have had their time."""

        async def close() -> None:
            await asyncio.sleep(self.timeout_seconds + 1)
            await transport.close()

        self._running.spawn(close())

    async def close(self) -> None:
        await self._running.close()
        await self._transport.close()
