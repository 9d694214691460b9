"""An echo worker: the smallest useful agent.

Needs only the SDK (`pip install agent-mesh`, no extras).

    AGENT_MESH_URL=https://127.0.0.1:8090 AGENT_MESH_CA_FILE=mesh-ca.crt \
    AGENT_MESH_NAMESPACE=demo AGENT_MESH_AGENT_ID=echo \
    AGENT_MESH_CREDENTIAL_FILE=echo.credential AGENT_MESH_PORT=9001 python examples/echo_worker.py

Task `echo` returns its payload; task `sleep` waits and says which agent ran it. Requests
are answered with their payload. Stream `echo` sends every chunk back as it arrives;
stream `digest` hashes a stream of any size without holding it (base64 chunks in, one
summary out).
"""

import asyncio
import base64
import hashlib
import logging
import os
import resource
from collections.abc import AsyncIterator
from typing import Any

from agent_mesh.sdk import Agent, MeshClaims, Message, StreamContext, TaskContext

agent = Agent(agent_type="worker", capabilities=["echo"])
logger = logging.getLogger("echo_worker")


@agent.task("echo")
async def echo(payload: Any, ctx: TaskContext) -> Any:
    return payload


@agent.task("sleep")
async def sleep(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Takes payload["seconds"]; says who ran it (for routing demos and tests)."""
    logger.info("task %s attempt %s: sleeping", ctx.task_uid, ctx.attempt)
    await asyncio.sleep(float(payload.get("seconds", 1)))
    return {"slept": payload.get("seconds", 1), "by": agent.tokens.agent_id}


@agent.on_message
async def answer(message: Message, caller: MeshClaims) -> Any:
    return message.payload


@agent.stream("echo")
async def echo_stream(
    payload: Any, chunks: AsyncIterator[Any], ctx: StreamContext
) -> AsyncIterator[Any]:
    async for chunk in chunks:
        yield chunk


@agent.stream("digest")
async def digest(payload: Any, chunks: AsyncIterator[str], ctx: StreamContext) -> dict[str, Any]:
    """Hashes the stream and reports how much this process's memory grew meanwhile."""
    sha, size = hashlib.sha256(), 0
    start = peak = _rss_bytes()
    async for n, chunk in _numbered(chunks):
        data = base64.b64decode(chunk)
        sha.update(data)
        size += len(data)
        if n % 64 == 0:
            peak = max(peak, _rss_bytes())
    return {"bytes": size, "sha256": sha.hexdigest(), "rssGrowthBytes": peak - start}


async def _numbered(chunks: AsyncIterator[str]) -> AsyncIterator[tuple[int, str]]:
    n = 0
    async for chunk in chunks:
        yield n, chunk
        n += 1


def _rss_bytes() -> int:
    """Resident memory now (Linux /proc), else the lifetime peak."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    agent.run()
