"""What the transport scenarios share: the processes under test (SDK Agents that echo,
bare aiohttp sites that answer the same envelope), the baseline's envelopes, and the two
callers (our Transport and raw aiohttp).

Imported by the Agent processes: nothing here may import the mesh server."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from agent_mesh.auth.tokens import MeshClaims
from agent_mesh.domain.errors import MeshError
from agent_mesh.domain.message import Message, MessageType
from agent_mesh.sdk.agent import Agent
from agent_mesh.transport.client import Transport
from common.children import wait_for_stop
from common.harness import Mesh, local_url, post_app, serve_until_stopped, wait_healthy
from common.procfs import raise_fd_limit
from common.profiling import profiled

PAYLOAD = {"text": "x" * 512}
CALLER = "agent-0"  # an orchestrator in meshserver's registry: may message agents, broadcast
RECEIVER = "agent-1"
MESSAGES = "/v1/messages"
Call = Callable[[], Awaitable[None]]


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def raw_envelope(
    sender: str, to: str, kind: str, payload: Any, correlation_id: str | None = None
) -> dict[str, Any]:
    """The envelope the raw baseline sends or answers: the fields and size of ours, built
    as a plain dict."""
    out: dict[str, Any] = {
        "messageId": uuid.uuid4().hex,
        "from": sender,
        "to": to,
        "type": kind,
        "payload": payload,
        "timestamp": now_rfc3339(),
    }
    if correlation_id is not None:
        out["correlationId"] = correlation_id
    out["metadata"] = {}
    return out


def raw_reply(message: dict[str, Any]) -> dict[str, Any]:
    """The baseline's answer to `message`: the Agent's reply, without the Agent."""
    return raw_envelope(
        message["to"], message["from"], "response", message.get("payload"), message["messageId"]
    )


def error_name(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno is not None:
        return f"{type(error).__name__} {os.strerror(error.errno)}"
    return type(error).__name__


# --- the processes under test ------------------------------------------------------------


async def echo(message: Message, caller: MeshClaims) -> Any:
    return message.payload


async def heard(message: Message, caller: MeshClaims) -> None:
    return None


def echo_agent(mesh: Mesh, agent_id: str, port: int) -> Agent:
    """An SDK Agent that echoes requests and takes events."""
    agent = Agent("worker", ["echo"], tokens=mesh.tokens(agent_id), host="127.0.0.1", port=port)
    agent.on_message(echo)
    agent.on_event(heard)
    return agent


def serve_agents(
    mesh: Mesh,
    agent_ids: list[str],
    ports: list[int],
    profile: Path | None,
    ready: Event,
    stop: Event,
) -> None:
    """A children.Child target: SDK Agents (one per port, all in this process)."""

    async def main() -> None:
        agents = [echo_agent(mesh, a, p) for a, p in zip(agent_ids, ports, strict=True)]
        # identity and the JWKS before serving, so the first measured call is not an exchange
        await asyncio.gather(*(agent.tokens.token() for agent in agents))
        await asyncio.gather(*(agent.refresh_keys() for agent in agents))
        done = asyncio.Event()
        serving = [asyncio.create_task(agent.serve(done)) for agent in agents]
        healthy = asyncio.create_task(wait_healthy([local_url(p) for p in ports]))
        await asyncio.wait([healthy, *serving], return_when=asyncio.FIRST_COMPLETED)
        for task in serving:
            if task.done():  # an agent that stops before it is asked to has failed
                task.result()
                raise RuntimeError("an agent stopped on its own")
        await healthy
        with profiled(profile):
            ready.set()
            await wait_for_stop(stop)
        done.set()
        await asyncio.gather(*serving, return_exceptions=True)

    raise_fd_limit()
    asyncio.run(main())


async def raw_message(request: web.Request) -> web.Response:
    """The baseline's handler: decode the envelope, answer the same envelope the Agent
    would (same fields and size), with no validation, no token and no ACL."""
    message = json.loads(await request.read())
    if message.get("type") == "event":
        return web.Response(status=202)
    return web.json_response(raw_reply(message))


def raw_app() -> web.Application:
    return post_app(MESSAGES, raw_message)


def serve_raw(ports: list[int], profile: Path | None, ready: Event, stop: Event) -> None:
    """A children.Child target: bare aiohttp sites (one per port, all in this process),
    the baseline servers."""

    raise_fd_limit()
    asyncio.run(serve_until_stopped([(raw_app(), port) for port in ports], ready, stop, profile))


# --- the callers ---------------------------------------------------------------------------


def counting(call: Call, failures: Counter[str]) -> Call:
    """`call`, with a failure counted (by kind) instead of ending the run."""

    async def counted() -> None:
        try:
            await call()
        except (MeshError, RuntimeError, aiohttp.ClientError, TimeoutError) as error:
            failures[f"{type(error).__name__}: {str(error)[:120]}"] += 1

    return counted


class Clients:
    """The two callers: ours (Transport with a TokenSource) to `ours_url`, and raw
    aiohttp to `raw_url`."""

    def __init__(self, mesh: Mesh, ours_url: str, raw_url: str) -> None:
        self.ours_url = ours_url
        self.raw_url = raw_url + MESSAGES
        self.source = mesh.tokens(CALLER)
        self.transport = Transport(token=self.source.token)
        config = self.transport.config
        # the baseline gets the pool the Transport has per agent (DESIGN §5: 10 connections)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=config.max_connections_per_agent, keepalive_timeout=config.keepalive_seconds
            )
        )
        self.headers: dict[str, str] = {}

    async def start(self) -> None:
        token = await self.source.token()
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    async def close(self) -> None:
        await self.transport.close()
        await self.session.close()

    async def ours(self) -> None:
        message = Message.new(MessageType.REQUEST, CALLER, RECEIVER, PAYLOAD)
        await self.transport.request(self.ours_url, message)

    async def raw(self) -> None:
        envelope = raw_envelope(CALLER, RECEIVER, "request", PAYLOAD)
        body = json.dumps(envelope)
        async with self.session.post(self.raw_url, data=body, headers=self.headers) as response:
            reply = json.loads(await response.read())
        if response.status != 200 or reply.get("correlationId") != envelope["messageId"]:
            raise RuntimeError(f"raw baseline: {response.status} {reply}")
