"""The agent's heartbeat loop: what keeps it `healthy` in `kubectl get meshagents`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

import aiohttp

from agent_mesh.sdk.identity import TokenSource
from agent_mesh.transport.client import read_body

logger = logging.getLogger("agent_mesh.sdk")
HEARTBEAT_RESPONSE_MAX_BYTES: Final = 64 * 1024
"""The answer is a small JSON object; more than this is not read."""


async def send_heartbeat(
    session: aiohttp.ClientSession,
    source: TokenSource,
    active_tasks: int,
    version: str | None = None,
    endpoint: str | None = None,
) -> int:
    """One beat; returns the HTTP status. A refused token is renewed and the beat retried."""
    issued_token = await source.token()
    issued = source.identity
    assert issued is not None
    url = f"{source.mesh_url}/v1/agents/{issued.namespace}/{issued.agent_id}/heartbeat"
    body: dict[str, object] = {"activeTasks": active_tasks}
    if version:
        body["version"] = version
    if endpoint:
        body["endpoint"] = endpoint
    for attempt in range(2):
        headers = {"Authorization": f"Bearer {issued_token}"}
        async with session.post(url, json=body, headers=headers, ssl=source.ssl) as response:
            await read_body(response, HEARTBEAT_RESPONSE_MAX_BYTES)
            if response.status != 401 or attempt:
                return response.status
        source.invalidate()  # rotated key, revoked token: get a fresh one once
        issued_token = await source.token()
    return 401


async def heartbeat_forever(
    source: TokenSource,
    interval_seconds: float,
    active_tasks: Callable[[], int],
    version: str | None = None,
    endpoint: str | None = None,
) -> None:
    """Beat every `interval_seconds` until cancelled; failures are logged and retried."""
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                status = await send_heartbeat(session, source, active_tasks(), version, endpoint)
                if status != 200:
                    logger.warning("heartbeat refused with HTTP %d", status)
            except Exception as error:  # keep beating: the operator may be restarting
                logger.warning("heartbeat failed: %s", error)
            await asyncio.sleep(interval_seconds)
