"""Which HTTP client engine the transport's hot path runs on, decided by measurement:
httpx with its own transport, the httpx API over aiohttp's client (httpx-aiohttp), and
aiohttp's client directly, each POSTing a JSON envelope to an aiohttp server in another
process on loopback.

    .venv/bin/python bench/transport_engines.py [--quick]

Prints a table and writes bench/results/transport_engines.json. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import web
from httpx_aiohttp import AiohttpTransport

from agent_mesh.domain.message import Message, MessageType
from agent_mesh.ports import free_port

RESULTS = Path(__file__).parent / "results"
INFLIGHT = 64
Post = Callable[[str, bytes], Awaitable[bytes]]


def _serve(port: int, ready: Event) -> None:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=body, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


async def measure(post: Post, url: str, body: bytes, sequential: int, total: int) -> dict[str, Any]:
    for _ in range(200):
        await post(url, body)
    latencies = []
    for _ in range(sequential):
        start = time.perf_counter()
        await post(url, body)
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await post(url, body)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(INFLIGHT)))
    return {
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(0.99 * len(latencies))] * 1000,
        "per_second_64_inflight": total / (time.perf_counter() - start),
    }


async def run_all(port: int, sequential: int, total: int) -> dict[str, dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/v1/messages"
    envelope = Message.new(MessageType.REQUEST, "critic-1", "worker-1", {"text": "x" * 512})
    body = json.dumps(envelope.to_wire()).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + "t" * 600}
    results: dict[str, dict[str, Any]] = {}
    limits = httpx.Limits(max_connections=INFLIGHT, max_keepalive_connections=INFLIGHT)

    async with httpx.AsyncClient(limits=limits) as plain:

        async def httpx_default(u: str, b: bytes) -> bytes:
            return (await plain.post(u, content=b, headers=headers)).content

        results["httpx (own transport)"] = await measure(
            httpx_default, url, body, sequential, total
        )

    transport = AiohttpTransport(
        client=lambda: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=INFLIGHT))
    )
    async with httpx.AsyncClient(transport=transport) as bridged:

        async def httpx_aiohttp(u: str, b: bytes) -> bytes:
            return (await bridged.post(u, content=b, headers=headers)).content

        results["httpx API over aiohttp (httpx-aiohttp)"] = await measure(
            httpx_aiohttp, url, body, sequential, total
        )

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=INFLIGHT)) as session:

        async def aiohttp_direct(u: str, b: bytes) -> bytes:
            async with session.post(u, data=b, headers=headers) as response:
                return await response.read()

        results["aiohttp client"] = await measure(aiohttp_direct, url, body, sequential, total)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke)")
    args = parser.parse_args()
    sequential, total = (300, 2000) if args.quick else (3000, 20_000)
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    server = ctx.Process(target=_serve, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            print("the echo server did not start", file=sys.stderr)
            return 1
        results = asyncio.run(run_all(port, sequential, total))
    finally:
        server.terminate()
        server.join()
    base = results["aiohttp client"]
    print(f"{'engine':<42} {'p50 ms':>8} {'p99 ms':>8} {'req/s @64':>10} {'vs aiohttp':>11}")
    for name, r in results.items():
        r["throughput_ratio_to_aiohttp"] = (
            r["per_second_64_inflight"] / base["per_second_64_inflight"]
        )
        print(
            f"{name:<42} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
            f"{r['per_second_64_inflight']:>10,.0f} {r['throughput_ratio_to_aiohttp']:>10.2f}x"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {
        "benchmark": "transport_engines",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": {"httpx": httpx.__version__, "aiohttp": aiohttp.__version__},
        "quick": args.quick,
        "results": results,
    }
    (RESULTS / "transport_engines.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'transport_engines.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
