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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final
from urllib.parse import urlsplit

from agent_mesh.observability.metrics import TASK_CALLBACKS
from agent_mesh.transport.client import Outcome, Transport, TransportConfig

logger = logging.getLogger("agent_mesh.mesh.callbacks")
TIMEOUT_SECONDS: Final = 10.0
MAX_ORIGINS: Final = 256
"""Distinct origins one connection pool serves before it is replaced."""


def split_url(url: str) -> tuple[str, str]:
    """(origin, path with query) of an http(s) URL, as the transport takes them."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return f"{parts.scheme}://{parts.netloc}", path


class CallbackNotifier:
    """POSTs answers to callback URLs in the background; `close()` waits for none of them."""

    def __init__(self, timeout_seconds: float = TIMEOUT_SECONDS) -> None:
        self.timeout_seconds = timeout_seconds
        self._transport = self._new_transport()
        self._origins: set[str] = set()
        self._running: set[asyncio.Task[None]] = set()

    def _new_transport(self) -> Transport:
        return Transport(TransportConfig(timeout_seconds=self.timeout_seconds, retries=0))

    def notify(self, url: str, answer: dict[str, Any]) -> None:
        """Send `answer` to `url` soon; returns at once."""
        task = asyncio.get_running_loop().create_task(self._send(url, answer))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _send(self, url: str, answer: dict[str, Any]) -> None:
        origin, path = split_url(url)
        transport = self._transport_for(origin)
        delivery = await transport.post(origin, path, answer, retries=0)
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

        task = asyncio.get_running_loop().create_task(close())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def close(self) -> None:
        for task in list(self._running):
            task.cancel()
        for task in list(self._running):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._transport.close()
