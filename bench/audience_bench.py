"""What recipient-bound tokens cost on the hot path: MeshClient.request() to an SDK Agent in
another process, before and after, as a ratio measured in one run; and what the token
exchange and the operator's per-recipient tokens cost when they are not cached.

    .venv/bin/python bench/audience_bench.py [--count 1000] [--rounds 5]

- before: MeshClient with one token for every peer (what it sent before: the caller's
  token from its TokenSource, renewed at 80%). Agents now refuse any token not addressed
  to them, so this row sends a recipient token fetched once through that same path: the
  agent's side is identical (a verified-token cache hit), only the caller's lookup differs.
- after: MeshClient as shipped: a recipient token per recipient, from its cache.
  Both rows route by capability (discovery cached 60 s), sequentially, interleaved in
  slices of 100 (each side first in turn); then messages/s with 32 in flight; and the
  token lookup alone, in process.
- miss: a recipient token exchanged for every message (what the cache saves).
- exchange: POST /v1/token round trips, one recipient and a batch of 20.
- operator: Authority.operator_token() for one agent, cached and signing a new one.

The mesh API is bench/meshserver.py (the operator's app, auth state in memory); the
Agent is `agent-1` of its registry, heartbeating its endpoint; the caller `agent-0`, an
orchestrator. Prints a table and writes bench/results/audience.json. Asserts nothing;
the processes it starts are stopped when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import multiprocessing
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp
from meshserver import CREDENTIAL, NAMESPACE, ServerProcess

from agent_mesh.auth.audit import AuditLog
from agent_mesh.auth.authority import Authority, AuthSettings
from agent_mesh.auth.memory import (
    MemoryKeyStore,
    MemoryRevocationStore,
    StaticTokenReviewer,
    registry_fetcher,
)
from agent_mesh.auth.tokens import GRANT_TOKEN_EXCHANGE, AgentIdentity
from agent_mesh.domain.acl import PolicyIndex
from agent_mesh.domain.agents import AgentRegistry
from agent_mesh.domain.clock import SystemClock
from agent_mesh.domain.message import Message
from agent_mesh.ports import free_port
from agent_mesh.sdk import Agent, MeshClaims, MeshClient, TokenSource
from agent_mesh.sdk.recipients import RecipientTokens

RESULTS = Path(__file__).parent / "results"
CALLER, RECEIVER, CAPABILITY = "agent-0", "agent-1", "summarize"
PAYLOAD = {"text": "x" * 512}
Call = Callable[[], Awaitable[object]]


def source(mesh_url: str, agent_id: str) -> TokenSource:
    return TokenSource(mesh_url, namespace=NAMESPACE, agent_id=agent_id, credential=CREDENTIAL)


def serve_agent(mesh_url: str, port: int, ready: Event, stop: Event) -> None:
    """The receiver: an SDK Agent echoing requests, in a process of its own."""

    async def echo(message: Message, caller: MeshClaims) -> Any:
        return message.payload

    async def main() -> None:
        url = f"http://127.0.0.1:{port}"
        agent = Agent(
            "worker",
            [CAPABILITY],
            tokens=source(mesh_url, RECEIVER),
            host="127.0.0.1",
            port=port,
            endpoint=url,
        )
        agent.on_message(echo)
        done = asyncio.Event()
        serving = asyncio.create_task(agent.serve(done))
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(f"{url}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        done.set()
        await serving

    logging.disable(logging.CRITICAL)
    asyncio.run(main())


class OneTokenForAll:
    """The caller's side before recipient tokens: one token for every peer, looked up as
    TokenSource.token() did (a clock check, renewal at 80%)."""

    def __init__(self, token: str, lifetime: float) -> None:
        self._token = token
        self._renew_at = time.monotonic() + 0.8 * lifetime
        self.exchanges = 0

    async def token_for(self, namespace: str, agent_id: str) -> str:
        if time.monotonic() < self._renew_at:
            return self._token
        raise RuntimeError("the bench outlived its token")

    def forget(self, namespace: str, agent_id: str) -> None:
        pass

    async def close(self) -> None:
        pass


class ExchangeEveryTime(RecipientTokens):
    """A recipient token exchanged for every message: what the cache saves."""

    async def token_for(self, namespace: str, agent_id: str) -> str:
        self.forget(namespace, agent_id)
        return await super().token_for(namespace, agent_id)


async def lookup_us(recipients: Any, count: int) -> float:
    """What the caller spends finding the token for one message, in process (µs)."""
    start = time.perf_counter()
    for _ in range(count):
        await recipients.token_for(NAMESPACE, RECEIVER)
    return (time.perf_counter() - start) / count * 1e6


async def sequential(call: Call, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return times


async def per_second(call: Call, total: int, concurrency: int) -> float:
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start)


def ms(values: list[float], q: float = 0.5) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def client_rows(mesh_url: str, args: argparse.Namespace) -> dict[str, Any]:
    after = MeshClient(source(mesh_url, CALLER))
    before = MeshClient(source(mesh_url, CALLER))
    miss = MeshClient(source(mesh_url, CALLER))
    miss.recipients = ExchangeEveryTime(miss.tokens)
    try:
        for _ in range(100):  # the receiver's first heartbeat makes it discoverable
            if await after.discover(CAPABILITY, fresh=True):
                break
            await asyncio.sleep(0.1)
        await after.request(PAYLOAD, capability=CAPABILITY)
        token = await after.recipients.token_for(NAMESPACE, RECEIVER)
        before.recipients = OneTokenForAll(token, lifetime=300)  # type: ignore[assignment]
        clients = {"before": before, "after": after}
        calls: dict[str, Call] = {
            name: (lambda c=c: c.request(PAYLOAD, capability=CAPABILITY))
            for name, c in clients.items()
        }
        for call in calls.values():  # warm up: connections, caches
            await sequential(call, 300)
        latencies: dict[str, list[float]] = {name: [] for name in calls}
        rates: dict[str, list[float]] = {name: [] for name in calls}
        names = list(calls)
        for r in range(args.rounds):
            # interleaved in slices of 100, each side first in turn: drift hits both alike
            for s in range(0, args.count, 100):
                for name in names if (r + s // 100) % 2 == 0 else names[::-1]:
                    latencies[name] += await sequential(calls[name], min(100, args.count - s))
            for name in names if r % 2 == 0 else names[::-1]:
                rates[name].append(await per_second(calls[name], args.count, args.inflight))
        lookups = {name: await lookup_us(clients[name].recipients, 20_000) for name in names}
        misses = await sequential(lambda: miss.request(PAYLOAD, capability=CAPABILITY), args.misses)
        rows = {
            name: {
                "p50_ms": ms(latencies[name]),
                "p99_ms": ms(latencies[name], 0.99),
                f"per_second_{args.inflight}_inflight": statistics.median(rates[name]),
            }
            for name in calls
        }
        rows["miss: exchange every message"] = {
            "p50_ms": ms(misses),
            "p99_ms": ms(misses, 0.99),
        }
        key = f"per_second_{args.inflight}_inflight"
        return {
            "rows": rows,
            "token_lookup_us": lookups,
            "after_over_before": {
                "p50": rows["after"]["p50_ms"] / rows["before"]["p50_ms"],
                "p99": rows["after"]["p99_ms"] / rows["before"]["p99_ms"],
                f"throughput_{args.inflight}_inflight": rows["after"][key] / rows["before"][key],
            },
            "exchanges_by_the_cached_client": after.recipients.exchanges,
        }
    finally:
        for c in (after, before, miss):
            await c.close()


async def exchange_rows(mesh_url: str, count: int) -> dict[str, Any]:
    subject = await source(mesh_url, CALLER).token()
    single = {"grantType": GRANT_TOKEN_EXCHANGE, "subjectToken": subject}
    batch = dict(single, audiences=[f"{NAMESPACE}/agent-{i}" for i in range(1, 21)])
    single["audience"] = f"{NAMESPACE}/{RECEIVER}"
    out = {}
    async with aiohttp.ClientSession() as session:
        for name, body in (("exchange, 1 recipient", single), ("exchange, 20 recipients", batch)):

            async def post(body: dict[str, Any] = body) -> None:
                async with session.post(f"{mesh_url}/v1/token", json=body) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"exchange refused: {response.status}")

            await sequential(post, 20)
            times = await sequential(post, count)
            out[name] = {"p50_ms": ms(times), "p99_ms": ms(times, 0.99)}
    return out


async def operator_rows(count: int) -> dict[str, Any]:
    """Authority.operator_token() in this process: a cache hit, and a new token signed."""
    clock = SystemClock()
    authority = Authority(
        AuthSettings(audit_allowed=False),
        registry=AgentRegistry(),
        policies=PolicyIndex(),
        keys=MemoryKeyStore(),
        revocation_store=MemoryRevocationStore(),
        reviewer=StaticTokenReviewer(),
        fetch_agent=registry_fetcher(AgentRegistry()),
        audit=AuditLog(),
        clock=clock,
    )
    await authority.start()
    logging.getLogger("agent_mesh.audit").disabled = True
    identity = AgentIdentity("agent-mesh-operator", "mesh-operator", NAMESPACE, (), "op")
    audience, lifetime = f"{NAMESPACE}/{RECEIVER}", dt.timedelta(seconds=310)

    def timed(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        for _ in range(count):
            fn()
        return (time.perf_counter() - start) / count * 1e6

    authority.operator_token(NAMESPACE, RECEIVER, 310)
    return {
        "operator token, cached (us)": timed(
            lambda: authority.operator_token(NAMESPACE, RECEIVER, 310)
        ),
        "operator token, signed (us)": timed(
            lambda: authority.issuer.issue(identity, audience=audience, lifetime=lifetime)
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="requests per side per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--misses", type=int, default=300, help="requests exchanging each time")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    mesh_port, agent_port = free_port(), free_port()
    mesh_url = f"http://127.0.0.1:{mesh_port}"
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    receiver = ctx.Process(
        target=serve_agent, args=(mesh_url, agent_port, ready, stop), daemon=True
    )
    with ServerProcess(mesh_port, agents=21):
        receiver.start()
        try:
            if not ready.wait(60):
                raise RuntimeError("the receiving Agent did not start")
            result = asyncio.run(client_rows(mesh_url, args))
            result["exchange"] = asyncio.run(exchange_rows(mesh_url, 300))
        finally:
            stop.set()
            receiver.join(10)
            if receiver.is_alive():
                receiver.terminate()
                receiver.join()
    result["operator"] = asyncio.run(operator_rows(5000))
    result["settings"] = vars(args)
    result["machine"] = {"python": sys.version.split()[0], "platform": platform.platform()}

    print(f"{'MeshClient.request -> Agent':34} {'p50 ms':>8} {'p99 ms':>8} {'msg/s':>9}")
    for name, row in result["rows"].items():
        rate = row.get(f"per_second_{args.inflight}_inflight")
        print(
            f"{name:34} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} "
            f"{'' if rate is None else f'{rate:9.0f}'}"
        )
    ratio = result["after_over_before"]
    print(
        f"after / before: p50 {ratio['p50']:.3f}, p99 {ratio['p99']:.3f}, "
        f"{args.inflight} in flight {ratio[f'throughput_{args.inflight}_inflight']:.3f} "
        f"(exchanges by the cached client: {result['exchanges_by_the_cached_client']})"
    )
    for name, micros in result["token_lookup_us"].items():
        print(f"{'token lookup per message, ' + name + ' (us)':34} {micros:8.2f}")
    for name, row in result["exchange"].items():
        print(f"{name:34} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f}")
    for name, micros in result["operator"].items():
        print(f"{name:34} {micros:8.1f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "audience.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
