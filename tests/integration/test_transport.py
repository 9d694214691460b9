"""The transport against real HTTP servers on 127.0.0.1: request/response, retry policy,
timeouts, the per-agent connection limit, broadcast with a dead target."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent_mesh.devcluster.ports import free_port
from agent_mesh.domain.errors import DispatchError
from agent_mesh.domain.message import BROADCAST, Message, MessageType
from agent_mesh.domain.task_message import TaskRequest
from agent_mesh.transport.batching import BatchingTransport
from agent_mesh.transport.client import Outcome, Transport, TransportConfig
from tests.support.stand_ins import unanswered_dial

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
    timed_out = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        await timed_out.wait()  # answers only after the client gave up
        return web.Response()

    sleep = RecordedSleep()
    transport = Transport(TransportConfig(timeout_seconds=0.3), sleep=sleep)
    try:
        delivery = await transport.send(await serve(hang), request())
    finally:
        timed_out.set()
        await transport.close()
    assert delivery.outcome is Outcome.TIMEOUT
    assert delivery.attempts == 1
    assert "0.3 s" in (delivery.error or "")


async def test_a_dial_nobody_answers_fails_by_the_connect_timeout_not_the_whole_one() -> None:
    """A vanished pod's address answers nothing: the call fails as a connection error
    (the request never left: safe to try elsewhere) once the dial's own timeout passes,
    not when the call's 30 s are up."""
    sleep = RecordedSleep()
    config = TransportConfig(timeout_seconds=30, connect_timeout_seconds=0.3, retries=1)
    transport = Transport(config, sleep=sleep)
    try:
        with unanswered_dial() as url:
            delivery = await transport.send(url, request())
    finally:
        await transport.close()
    assert delivery.outcome is Outcome.CONNECT_ERROR
    assert delivery.error == "not connected within 0.3 s (nothing answered the dial)"
    assert delivery.attempts == 2 and len(sleep.delays) == 1  # retried: it never reached the agent


async def test_a_batch_to_a_dial_nobody_answers_fails_each_task_as_not_connected() -> None:
    config = TransportConfig(timeout_seconds=30, connect_timeout_seconds=0.3, retries=0)
    transport = BatchingTransport(config)
    tasks = [TaskRequest.of(f"t{i}", 1, "echo", i, {}) for i in range(3)]
    try:
        with unanswered_dial() as url:
            deliveries = await asyncio.gather(
                *(transport.post(url, "/v1/tasks", task, timeout_seconds=30) for task in tasks)
            )
    finally:
        await transport.close()
    assert {(d.outcome, d.error) for d in deliveries} == {
        (Outcome.CONNECT_ERROR, "not connected within 0.3 s (nothing answered the dial)")
    }


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


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA file and a server context whose certificate that CA signed for 127.0.0.1."""
    from agent_mesh.pki.certs import issue, make_ca

    ca, ca_key = make_ca("transport-test-ca")
    server = issue(ca, ca_key, "agent", ip_addresses=("127.0.0.1",), server=True)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "tls.crt").write_bytes(server.cert_pem)
    (tmp_path / "tls.key").write_bytes(server.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    return tmp_path / "ca.pem", context


async def test_tls_to_an_agent_whose_certificate_chains_to_the_ca(
    tls_files: tuple[Path, ssl.SSLContext],
) -> None:
    ca_file, server_tls = tls_files
    app = web.Application()
    app.router.add_post("/v1/messages", echo)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=server_tls)
    endpoint = f"http://127.0.0.1:{server.port}"  # as registered; use_tls upgrades it
    trusting = Transport(TransportConfig(use_tls=True, ca_file=str(ca_file)))
    doubting = Transport(TransportConfig(use_tls=True), sleep=RecordedSleep())
    try:
        reply = await trusting.request(endpoint, request())
        refused = await doubting.send(endpoint, request())
    finally:
        await trusting.close()
        await doubting.close()
        await server.close()
    assert reply.payload == {"echo": {"n": 1}}
    assert refused.outcome is Outcome.TLS_ERROR
    assert refused.attempts == 1  # a certificate that does not verify is not retried


async def test_every_call_goes_through_the_configured_proxy(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    seen: list[str] = []

    async def proxy(request: web.Request) -> web.StreamResponse:
        seen.append(str(request.url))  # a forward proxy gets the absolute target URL
        return await echo(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    proxy_server = TestServer(app, host="127.0.0.1")
    await proxy_server.start_server()
    transport = Transport(TransportConfig(proxy_url=f"http://127.0.0.1:{proxy_server.port}"))
    target = f"http://127.0.0.2:{free_port()}"  # nothing listens there; the proxy answers
    try:
        reply = await transport.request(target, request())
    finally:
        await transport.close()
        await proxy_server.close()
    assert reply.payload == {"echo": {"n": 1}}
    assert seen == [f"{target}/v1/messages"]
