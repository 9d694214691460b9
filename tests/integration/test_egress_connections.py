"""Outbound requests against real HTTP servers on 127.0.0.1, with two seams that keep every
other packet on this machine: a resolver that answers what a test says for its names (and
records the lookups), and a recorder on the event loop's `sock_connect` that refuses, and
records, any connection to an address that is not loopback. Each SSRF form is refused
before a connection is attempted: the recorder stays empty. Loopback servers of the test's
own are reached only where the policy admits loopback.

Also: redirects are not followed, oversized answers are cut off at the limit."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent_mesh.domain.egress import EgressClass, EgressPolicy
from agent_mesh.domain.errors import EgressRefusedError, ResponseTooLargeError
from agent_mesh.domain.message import Message, MessageType
from agent_mesh.domain.task_message import TaskRequest
from agent_mesh.mesh.callbacks import CallbackNotifier
from agent_mesh.sdk.identity import TokenSource
from agent_mesh.sdk.meshapi import call_mesh
from agent_mesh.transport.batching import BatchingTransport
from agent_mesh.transport.client import Outcome, Transport, TransportConfig
from agent_mesh.transport.egress import EgressGuard
from tests.support.egress_seams import Connects, MapResolver, record_connects

METADATA = "169.254.169.254"
CALLER, DECLARED = EgressClass.CALLER, EgressClass.DECLARED


@pytest.fixture
async def connects(monkeypatch: pytest.MonkeyPatch) -> Connects:
    return record_connects(monkeypatch)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Server:
    url: str
    received: list[str] = field(default_factory=list)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler | None], Awaitable[Server]]]:
    """Loopback servers; each records the paths it received."""
    servers: list[TestServer] = []

    async def start(handler: Handler | None = None) -> Server:
        server_ref: list[Server] = []

        async def record(request: web.Request) -> web.StreamResponse:
            server_ref[0].received.append(request.path_qs)
            await request.read()
            if handler is not None:
                return await handler(request)
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        server_ref.append(Server(f"http://127.0.0.1:{server.port}"))
        return server_ref[0]

    yield start
    for server in servers:
        await server.close()


def guard(resolver: MapResolver, *, loopback: bool = False) -> EgressGuard:
    return EgressGuard(EgressPolicy(allow_loopback=loopback), resolver)


async def refused_everywhere(url: str, resolver: MapResolver, connects: Connects) -> str:
    """The URL refused as a callback (at submission and at sending) and as an agent
    endpoint at dispatch, with nothing looked up and nothing connected; the message."""
    notifier = CallbackNotifier(guard=guard(resolver, loopback=True))
    with pytest.raises(EgressRefusedError) as refused:
        await notifier.check(url)
    assert refused.value.field == "callbackUrl" and refused.value.status == 400
    assert not await notifier.send(url, {"id": "t1"})
    await notifier.close()
    transport = Transport(TransportConfig(retries=3), guard=guard(resolver, loopback=True))
    try:
        delivery = await transport.post(url, "/v1/tasks", {}, egress=DECLARED)
    finally:
        await transport.close()
    assert delivery.outcome is Outcome.EGRESS_REFUSED and delivery.attempts == 1
    assert delivery.code == "EgressRefused"
    assert resolver.lookups == [] and connects.attempts == []
    return refused.value.message


async def test_decimal_integer_host_is_refused_before_any_connection(connects: Connects) -> None:
    message = await refused_everywhere("http://2852039166/latest", MapResolver(), connects)
    assert f"numeric shorthand for {METADATA}" in message


async def test_hex_host_is_refused_before_any_connection(connects: Connects) -> None:
    message = await refused_everywhere("http://0xa9fea9fe/latest", MapResolver(), connects)
    assert f"numeric shorthand for {METADATA}" in message


async def test_octal_host_is_refused_before_any_connection(connects: Connects) -> None:
    message = await refused_everywhere("http://0251.0376.0251.0376/", MapResolver(), connects)
    assert f"numeric shorthand for {METADATA}" in message


async def test_ipv4_mapped_ipv6_host_is_refused_before_any_connection(connects: Connects) -> None:
    url = f"http://[::ffff:{METADATA}]/latest"
    message = await refused_everywhere(url, MapResolver(), connects)
    assert f"(that is {METADATA}) is a cloud metadata service address" in message


async def test_a_dns_name_resolving_inside_is_refused_before_any_connection(
    connects: Connects,
) -> None:
    resolver = MapResolver(
        {
            "metadata.attacker.example": [[METADATA]],
            "split.attacker.example": [["93.184.216.34", "10.0.0.7"]],  # one inside is enough
            "v6.attacker.example": [["fd00:ec2::254"]],
        }
    )
    notifier = CallbackNotifier(guard=guard(resolver))
    for name, inside in [
        ("metadata.attacker.example", METADATA),
        ("split.attacker.example", "10.0.0.7"),
        ("v6.attacker.example", "fd00:ec2::254"),
    ]:
        url = f"http://{name}/hook"
        with pytest.raises(EgressRefusedError, match=f"resolves to {inside}"):
            await notifier.check(url)
        assert not await notifier.send(url, {"id": "t1"})  # checked again when sending
    await notifier.close()
    assert "metadata.attacker.example" in resolver.lookups
    assert connects.attempts == []


async def test_a_name_that_does_not_resolve_is_refused_at_submission(connects: Connects) -> None:
    notifier = CallbackNotifier(guard=guard(MapResolver()))
    with pytest.raises(EgressRefusedError, match="does not resolve"):
        await notifier.check("http://nowhere.example/hook")
    await notifier.close()
    assert connects.attempts == []


async def test_a_name_rebound_after_the_check_connects_only_to_a_checked_address(
    connects: Connects, serve: Callable[[Handler | None], Awaitable[Server]]
) -> None:
    server = await serve(None)
    port = int(server.url.rsplit(":", 1)[1])
    # first answer: our loopback server (admitted); every later one: the metadata address
    resolver = MapResolver({"rebind.example": [["127.0.0.1"], [METADATA]]})
    notifier = CallbackNotifier(guard=guard(resolver, loopback=True))
    url = f"http://rebind.example:{port}/hook"
    await notifier.check(url)  # passes: 127.0.0.1, loopback allowed
    assert not await notifier.send(url, {"id": "t1"})  # the connection's own lookup
    await notifier.close()
    assert resolver.lookups == ["rebind.example", "rebind.example"]
    assert connects.attempts == [] and server.received == []


async def test_a_name_resolving_to_an_admitted_address_is_dialled_there(
    connects: Connects, serve: Callable[[Handler | None], Awaitable[Server]]
) -> None:
    server = await serve(None)
    port = int(server.url.rsplit(":", 1)[1])
    resolver = MapResolver({"agent.example": [["127.0.0.1"]]})
    transport = Transport(guard=guard(resolver, loopback=True))
    try:
        delivery = await transport.post(
            f"http://agent.example:{port}", "/v1/tasks", {}, egress=DECLARED
        )
    finally:
        await transport.close()
    assert delivery.outcome is Outcome.OK, delivery
    assert connects.attempts == [("127.0.0.1", port)] and server.received == ["/v1/tasks"]


async def test_loopback_is_refused_unless_enabled(
    connects: Connects, serve: Callable[[Handler | None], Awaitable[Server]]
) -> None:
    server = await serve(None)
    transport = Transport(guard=guard(MapResolver()))
    try:
        delivery = await transport.post(server.url, "/v1/tasks", {}, egress=DECLARED)
    finally:
        await transport.close()
    assert delivery.outcome is Outcome.EGRESS_REFUSED
    assert delivery.error is not None and "loopback is not enabled" in delivery.error
    assert connects.attempts == [] and server.received == []


async def test_a_path_that_would_replace_the_origin_is_refused(
    connects: Connects, serve: Callable[[Handler | None], Awaitable[Server]]
) -> None:
    server = await serve(None)
    notifier = CallbackNotifier(guard=guard(MapResolver(), loopback=True))
    assert not await notifier.send(f"{server.url}//{METADATA}/latest", {"id": "t1"})
    await notifier.close()
    assert connects.attempts == [] and server.received == []


async def test_a_redirecting_callback_target_is_not_followed(
    connects: Connects, serve: Callable[[Handler | None], Awaitable[Server]]
) -> None:
    second = await serve(None)

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": f"{second.url}/stolen"})

    first = await serve(redirect)
    notifier = CallbackNotifier(guard=guard(MapResolver(), loopback=True))
    assert not await notifier.send(f"{first.url}/hook", {"id": "t1", "result": "secret"})
    await notifier.close()
    transport = Transport(guard=guard(MapResolver(), loopback=True))
    try:
        delivery = await transport.post(first.url, "/v1/tasks", {}, egress=DECLARED)
    finally:
        await transport.close()
    assert delivery.outcome is Outcome.HTTP_ERROR and delivery.status == 307
    assert delivery.code == "RedirectRefused"
    assert delivery.error is not None and "redirects are not followed" in delivery.error
    assert first.received == ["/hook", "/v1/tasks"]
    assert second.received == []


async def endless(request: web.Request) -> web.StreamResponse:
    """A body that never ends (chunked, no length): only a cap stops the reader."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        await response.write(b'{"x": "')
        while True:
            await response.write(b"a" * 65536)
    except (ConnectionError, RuntimeError):
        pass
    return response


async def test_an_oversized_callback_answer_is_cut_off(
    serve: Callable[[Handler | None], Awaitable[Server]],
) -> None:
    server = await serve(endless)
    notifier = CallbackNotifier(guard=guard(MapResolver(), loopback=True))
    assert not await asyncio.wait_for(notifier.send(f"{server.url}/hook", {"id": "t1"}), 10)
    await notifier.close()
    transport = Transport(TransportConfig(response_max_bytes=4096))
    try:
        delivery = await asyncio.wait_for(transport.post(server.url, "/hook", {}), 10)
    finally:
        await transport.close()
    assert delivery.outcome is Outcome.BAD_RESPONSE and delivery.code == "ResponseTooLarge"
    assert (
        delivery.error is not None and "larger than the 4096-byte response limit" in delivery.error
    )


async def test_an_oversized_agent_reply_fails_the_call_naming_the_limit(
    serve: Callable[[Handler | None], Awaitable[Server]],
) -> None:
    async def huge(request: web.Request) -> web.Response:
        message = Message.model_validate_json(await request.read())
        return web.json_response(message.reply({"blob": "b" * 100_000}).to_wire())

    server = await serve(huge)
    transport = Transport(TransportConfig(response_max_bytes=65536, retries=2))
    try:
        delivery = await transport.send(
            server.url, Message.new(MessageType.REQUEST, "a", "b", {"n": 1})
        )
        error_body = await transport.post(server.url, "/v1/messages", {"not": "a message"})
    finally:
        await transport.close()
    assert delivery.outcome is Outcome.BAD_RESPONSE and delivery.attempts == 1  # not retried
    assert delivery.error is not None and "65536-byte response limit" in delivery.error
    assert server.received == ["/v1/messages", "/v1/messages"]
    assert error_body.outcome is not Outcome.OK


async def test_an_oversized_batch_answer_line_is_cut_off(
    serve: Callable[[Handler | None], Awaitable[Server]],
) -> None:
    async def batch(request: web.Request) -> web.StreamResponse:
        tasks = (await request.json())["tasks"]
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        await response.write(
            b'{"taskUid": "%s", "attempt": 1, "result": "' % tasks[0]["taskUid"].encode()
        )
        try:
            while True:
                await response.write(b"r" * 65536)
        except (ConnectionError, RuntimeError):
            pass
        return response

    server = await serve(batch)
    transport = BatchingTransport(TransportConfig(response_max_bytes=8192))
    try:
        task = TaskRequest.of("u1", 1, "x", 1, {})  # typed: what the coordinator batches
        delivery = await asyncio.wait_for(transport.post(server.url, "/v1/tasks", task), 10)
    finally:
        await transport.close()
    assert delivery.outcome is Outcome.BAD_RESPONSE and delivery.code == "ResponseTooLarge"
    assert delivery.error is not None and "8192-byte response limit" in delivery.error


async def test_an_oversized_mesh_api_answer_is_cut_off(
    serve: Callable[[Handler | None], Awaitable[Server]],
) -> None:
    server = await serve(endless)
    tokens = TokenSource(server.url, namespace="ns", agent_id="a", credential="c")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ResponseTooLargeError, match="1024-byte response limit"):
            await asyncio.wait_for(
                call_mesh(
                    session, tokens, "GET", "/v1/agents", authenticated=False, max_bytes=1024
                ),
                10,
            )


async def test_a_compressed_answer_is_capped_after_decompression(
    serve: Callable[[Handler | None], Awaitable[Server]],
) -> None:
    bomb = gzip.compress(b'{"x": "' + b"z" * 4_000_000 + b'"}')  # ~4 KB on the wire

    async def compressed(request: web.Request) -> web.Response:
        return web.Response(
            body=bomb, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    server = await serve(compressed)
    transport = Transport(TransportConfig(response_max_bytes=65536))
    try:
        delivery = await transport.post(server.url, "/v1/tasks", {})
    finally:
        await transport.close()
    assert len(bomb) < 65536
    assert delivery.outcome is Outcome.BAD_RESPONSE and delivery.code == "ResponseTooLarge"
