"""The tailnet's control server, for what the operator asks of it: removing the device of
a deleted agent. `ControlServer` is the port; `Headscale` speaks headscale's REST API
(v0.27: GET and DELETE /api/v1/node/{id}, an API key as the bearer). Tailscale's own
admin API (DELETE /api/v2/device/{id}) can implement the same Protocol.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

import aiohttp


class Removal(StrEnum):
    REMOVED = "removed"
    ABSENT = "absent"
    """No such device (already removed, or never registered)."""
    NOT_OURS = "not-ours"
    """The id names a device with another name: left alone."""


class ControlServer(Protocol):
    async def remove_device(self, device_id: str, hostname: str) -> Removal:
        """Remove device `device_id` if it is still named `hostname`. Raises
        ControlServerError when the server fails or refuses."""
        ...

    async def close(self) -> None: ...


class ControlServerError(Exception):
    """The control server failed or refused; the message says which call and why."""


class Headscale:
    """headscale's REST API at `url` (its server_url), with API key `api_key`."""

    def __init__(self, url: str, api_key: str, timeout_seconds: float = 10.0) -> None:
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def remove_device(self, device_id: str, hostname: str) -> Removal:
        node_url = f"{self._url}/api/v1/node/{device_id}"
        try:
            async with self._client().get(node_url) as response:
                if response.status == 404:
                    return Removal.ABSENT
                if response.status != 200:
                    raise ControlServerError(
                        f"GET {node_url}: {response.status} {(await response.text())[:200]}"
                    )
                node = (await response.json()).get("node") or {}
            if hostname not in (node.get("name"), node.get("givenName")):
                return Removal.NOT_OURS
            async with self._client().delete(node_url) as response:
                if response.status == 404:
                    return Removal.ABSENT
                if response.status != 200:
                    raise ControlServerError(
                        f"DELETE {node_url}: {response.status} {(await response.text())[:200]}"
                    )
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ControlServerError(f"{node_url}: {error or type(error).__name__}") from None
        return Removal.REMOVED

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
