"""The transport against real HTTP servers on 127.0.0.1: request/response, retry policy,
timeouts, the per-agent connection limit, broadcast with a dead target."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent_mesh.domain.errors import DispatchError
from agent_mesh.domain.message import BROADCAST, Message, MessageType
from agent_mesh.ports import free_port
from agent_mesh.transport.client import Outcome, Transport, TransportConfig

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def echo(request: web.Request) -> web.Response:
    message = Message.model_validate_json(await request.read())
    return web.json_response(message.reply({"echo": message.payload}).to_wire())


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/v1/messages", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        await server.close()


class RecordedSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def request() -> Message:
    return Message.new(MessageType.REQUEST, "critic-1", "worker-1", {"n": 1})


async def test_request_gets_the_correlated_reply(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    endpoint = await serve(echo)
    transport = Transport()
    try:
        sent = request()
        reply = await transport.request(endpoint, sent)
    finally:
        await transport.close()
    assert reply.correlation_id == sent.message_id
    assert reply.payload == {"echo": {"n": 1}}


async def test_503_is_retried_with_doubling_backoff(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    calls = 0

    async def flaky(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            return web.Response(status=503)
        return await echo(request)

    sleep = RecordedSleep()
    transport = Transport(sleep=sleep)
    try:
        delivery = await transport.send(await serve(flaky), request())
    finally:
        await transport.close()
    assert (delivery.outcome, delivery.attempts) == (Outcome.OK, 3)
    assert sleep.delays == [1.0, 2.0]


async def test_400_is_not_retried(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def refuse(_: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "InvalidRequest"}}, status=400)

    sleep = RecordedSleep()
    transport = Transport(sleep=sleep)
    try:
        delivery = await transport.send(await serve(refuse), request())
        with pytest.raises(DispatchError, match="400"):
            await transport.request(await serve(refuse), request())
    finally:
        await transport.close()
    assert (delivery.outcome, delivery.status, delivery.attempts) == (Outcome.HTTP_ERROR, 400, 1)
    assert sleep.delays == []


async def test_timeout_is_reported_as_a_timeout_and_not_retried(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def hang(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    sleep = RecordedSleep()
    transport = Transport(TransportConfig(timeout_seconds=0.3), sleep=sleep)
    try:
        delivery = await transport.send(await serve(hang), request())
    finally:
        await transport.close()
    assert delivery.outcome is Outcome.TIMEOUT
    assert delivery.attempts == 1
    assert "0.3 s" in (delivery.error or "")


async def test_connection_pool_limit_holds_under_200_concurrent_requests(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    in_flight = 0
    most = 0
    peers: set[object] = set()

    async def slow_echo(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return await echo(request)

    endpoint = await serve(slow_echo)
    transport = Transport(TransportConfig(max_connections_per_agent=10))
    try:
        deliveries = await asyncio.gather(
            *(transport.send(endpoint, request()) for _ in range(200))
        )
    finally:
        await transport.close()
    assert all(d.outcome is Outcome.OK for d in deliveries)
    assert most <= 10
    assert len(peers) <= 10  # keep-alive: connections are reused, not one per request


async def test_broadcast_to_20_agents_with_one_dead_reports_each_outcome(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    received: list[str] = []

    async def listener(request: web.Request) -> web.Response:
        received.append(Message.model_validate_json(await request.read()).message_id)
        return web.Response(status=202)

    targets = {f"monitor-{i}": await serve(listener) for i in range(19)}
    targets["monitor-dead"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    sleep = RecordedSleep()
    transport = Transport(sleep=sleep)
    event = Message.new(MessageType.EVENT, "operator", BROADCAST, {"type": "agent.health"})
    try:
        outcomes = await transport.broadcast(targets, event)
    finally:
        await transport.close()
    assert len(received) == 19 and set(received) == {event.message_id}
    dead = outcomes.pop("monitor-dead")
    assert dead.outcome is Outcome.CONNECT_ERROR
    assert dead.attempts == 4  # the first try and 3 retries: a refused connection is safe to retry
    assert all(d.outcome is Outcome.OK and d.status == 202 for d in outcomes.values())
