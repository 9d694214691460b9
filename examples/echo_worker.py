"""An echo worker: the smallest useful agent.

    AGENT_MESH_URL=http://127.0.0.1:8090 AGENT_MESH_NAMESPACE=demo AGENT_MESH_AGENT_ID=echo \
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
    sha, size = hashlib.sha256(), 0
    async for chunk in chunks:
        data = base64.b64decode(chunk)
        sha.update(data)
        size += len(data)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"bytes": size, "sha256": sha.hexdigest(), "peakRssBytes": peak_kib * 1024}


if __name__ == "__main__":
    agent.run()
