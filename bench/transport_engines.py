"""Which HTTP client engine the transport's hot path runs on, decided by measurement:
httpx with its own transport, the httpx API over aiohttp's client (httpx-aiohttp), and
aiohttp's client directly, each POSTing a JSON envelope to an aiohttp server in another
process on loopback.

    .venv/bin/python bench/transport_engines.py [--quick]

Prints a table and writes bench/results/transport_engines.json. Asserts nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from multiprocessing.synchronize import Event
from typing import Any

import aiohttp
import httpx
from aiohttp import web
from httpx_aiohttp import AiohttpTransport

from agent_mesh.domain.message import Message, MessageType
from common import cli
from common.children import Child
from common.harness import free_port, local_url, post_app, serve_until_stopped
from common.load import per_second, sequential
from common.output import Column, label, table, write_result
from common.stats import summary

INFLIGHT = 64
Post = Callable[[str, bytes], Awaitable[bytes]]


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(body=body, content_type="application/json")


def serve_echo(port: int, ready: Event, stop: Event) -> None:
    """A children.Child target: POST /v1/messages answers its own body."""

    asyncio.run(serve_until_stopped([(post_app("/v1/messages", echo), port)], ready, stop))


async def measure(post: Post, url: str, body: bytes, count: int, total: int) -> dict[str, Any]:
    async def call() -> None:
        await post(url, body)

    await sequential(call, 200)
    latencies = await sequential(call, count)
    return {
        **summary(latencies, scale=1000, suffix="_ms"),
        "per_second_64_inflight": await per_second(call, total, INFLIGHT),
    }


async def run_all(port: int, count: int, total: int) -> dict[str, dict[str, Any]]:
    url = f"{local_url(port)}/v1/messages"
    envelope = Message.new(MessageType.REQUEST, "critic-1", "worker-1", {"text": "x" * 512})
    body = json.dumps(envelope.to_wire()).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + "t" * 600}
    results: dict[str, dict[str, Any]] = {}
    limits = httpx.Limits(max_connections=INFLIGHT, max_keepalive_connections=INFLIGHT)

    async with httpx.AsyncClient(limits=limits) as plain:

        async def httpx_default(u: str, b: bytes) -> bytes:
            return (await plain.post(u, content=b, headers=headers)).content

        results["httpx (own transport)"] = await measure(httpx_default, url, body, count, total)

    transport = AiohttpTransport(
        client=lambda: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=INFLIGHT))
    )
    async with httpx.AsyncClient(transport=transport) as bridged:

        async def httpx_aiohttp(u: str, b: bytes) -> bytes:
            return (await bridged.post(u, content=b, headers=headers)).content

        results["httpx API over aiohttp (httpx-aiohttp)"] = await measure(
            httpx_aiohttp, url, body, count, total
        )

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=INFLIGHT)) as session:

        async def aiohttp_direct(u: str, b: bytes) -> bytes:
            async with session.post(u, data=b, headers=headers) as response:
                return await response.read()

        results["aiohttp client"] = await measure(aiohttp_direct, url, body, count, total)
    return results


def main() -> int:
    parser = cli.BenchParser(__doc__)
    args = parser.parse()
    count, total = cli.quick_or_full(args, (300, 2000), (3000, 20_000))
    port = free_port()
    with Child("echo server", serve_echo, port):
        results = asyncio.run(run_all(port, count, total))
    base = results["aiohttp client"]
    for r in results.values():
        r["throughput_ratio_to_aiohttp"] = (
            r["per_second_64_inflight"] / base["per_second_64_inflight"]
        )
    ms = ".3f"
    print(
        table(
            [
                label(42, "engine", "engine"),
                Column("p50 ms", 8, ms, "p50_ms"),
                Column("p99 ms", 8, ms, "p99_ms"),
                Column("req/s @64", 10, ",.0f", "per_second_64_inflight"),
                Column("vs aiohttp", 11, ".2f", "throughput_ratio_to_aiohttp"),
            ],
            [{"engine": name, **r} for name, r in results.items()],
        )
    )
    write_result(
        "transport_engines",
        {
            "versions": {"httpx": httpx.__version__, "aiohttp": aiohttp.__version__},
            "quick": args.quick,
            "results": results,
        },
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
