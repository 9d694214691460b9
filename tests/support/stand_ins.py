"""Stand-in servers: an aiohttp app of the test's own served on 127.0.0.1, in place of a
server the code under test calls (an agent, a callback's target)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from agent_mesh.devcluster.ports import free_port


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int | None = None) -> AsyncIterator[str]:
    """`app` served on 127.0.0.1 at `port` (default: a free one) for the block; yields its
    base URL, `http://127.0.0.1:<port>`."""
    port = port or free_port()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
