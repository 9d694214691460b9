"""What recipient-bound tokens cost on the hot path: MeshClient.request() to an SDK Agent in
another process, before and after, as a ratio measured in one run; and what the token
exchange and the operator's per-recipient tokens cost when they are not cached.

    .venv/bin/python bench/audience_bench.py [--quick] [--count N] [--rounds N]

- before: MeshClient with one token for every peer (the lookup it made before: its
  TokenSource's token, a clock check). Agents now refuse any token not addressed to them,
  so this row sends a recipient token fetched once through that same lookup: the agent's
  side is identical (a verified-token cache hit), only the caller's lookup differs.
- after: MeshClient as shipped, a recipient token per recipient from its cache.
  Both route by capability (discovery answered in process, the same for both),
  sequentially, interleaved in slices of 100 with each side first in turn; then
  messages/s at 32 in flight; and the token lookup alone, in process.
- miss: a recipient token exchanged for every message (what the cache saves).
- exchange: POST /v1/token token exchange, one recipient and a batch of 20.
- operator: Authority.operator_token() in process, a cache hit and a new token signed
  (what dispatch would pay per task without its cache).

The mesh API is common.meshserver (the operator's app, auth state in memory); the Agent
is its `agent-1`; the caller `agent-0`, an orchestrator.
Prints a table and writes bench/results/audience.json. Asserts nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
from collections.abc import Awaitable, Callable
from multiprocessing.synchronize import Event
from typing import Any

import aiohttp

from agent_mesh.auth.tokens import GRANT_TOKEN_EXCHANGE, AgentIdentity
from agent_mesh.domain.message import Message
from agent_mesh.sdk import Agent, AgentInfo, MeshClaims, MeshClient
from agent_mesh.sdk.recipients import RecipientTokens
from common import cli
from common.children import Child, wait_for_stop
from common.harness import CREDENTIAL, NAMESPACE, Mesh, free_port, local_url, wait_healthy
from common.load import per_call_us, per_second, sequential
from common.output import Column, label, table, write_result
from common.stats import summary

CALLER, RECEIVER, CAPABILITY = "agent-0", "agent-1", "summarize"  # common.meshserver's fleet
PAYLOAD = {"text": "x" * 512}
INFLIGHT = 32
Call = Callable[[], Awaitable[object]]


def serve_receiver(mesh: Mesh, port: int, ready: Event, stop: Event) -> None:
    """A Child target: the SDK Agent `agent-1`, echoing requests."""

    async def echo(message: Message, caller: MeshClaims) -> Any:
        return message.payload

    async def main() -> None:
        url = local_url(port)
        agent = Agent(
            "worker",
            [CAPABILITY],
            tokens=mesh.tokens(RECEIVER),
            host="127.0.0.1",
            port=port,
        )
        agent.on_message(echo)
        done = asyncio.Event()
        serving = asyncio.create_task(agent.serve(done))
        await wait_healthy([url])
        ready.set()
        await wait_for_stop(stop)
        done.set()
        await serving

    asyncio.run(main())


class Pinned(MeshClient):
    """MeshClient whose discovery always answers the receiver (the mesh API's discovery
    takes only endpoints the operator may call, and this receiver is on loopback): target
    resolution costs the same in every row, the token path is what differs."""

    def __init__(self, mesh: Mesh, receiver: str) -> None:
        super().__init__(mesh.tokens(CALLER))
        self._receiver = AgentInfo(
            RECEIVER, NAMESPACE, "worker", (CAPABILITY,), "healthy", 0, 10, receiver
        )

    async def discover(self, *_: Any, **__: Any) -> list[AgentInfo]:
        return [self._receiver]


class OneTokenForAll:
    """The caller's side before recipient tokens: one token for every peer, looked up as
    TokenSource.token() did (a clock check; renewal at 80%)."""

    def __init__(self, token: str, lifetime: float) -> None:
        self._token = token
        self._renew_at = time.monotonic() + 0.8 * lifetime

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


async def round_trips(
    mesh: Mesh, receiver: str, count: int, rounds: int, misses: int
) -> dict[str, Any]:
    after, before, miss = (Pinned(mesh, receiver) for _ in range(3))
    miss.recipients = ExchangeEveryTime(miss.tokens)
    try:
        await after.request(PAYLOAD, capability=CAPABILITY)
        token = await after.recipients.token_for(NAMESPACE, RECEIVER)
        before.recipients = OneTokenForAll(token, lifetime=300)  # type: ignore[assignment]
        clients = {"before": before, "after": after}

        def caller(client: MeshClient) -> Call:
            return lambda: client.request(PAYLOAD, capability=CAPABILITY)

        calls = {name: caller(c) for name, c in clients.items()}
        for call in calls.values():  # warm up: connections, caches
            await sequential(call, 300)
        names = list(calls)
        latencies: dict[str, list[float]] = {name: [] for name in names}
        rates: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            # slices of 100, each side first in turn: drift hits both alike
            for s in range(0, count, 100):
                for name in names if (r + s // 100) % 2 == 0 else names[::-1]:
                    latencies[name] += await sequential(calls[name], min(100, count - s))
            for name in names if r % 2 == 0 else names[::-1]:
                rates[name].append(await per_second(calls[name], count, INFLIGHT))
        rows: list[dict[str, Any]] = [
            {
                "what": name,
                **summary(latencies[name], scale=1000, suffix="_ms"),
                "per_second": statistics.median(rates[name]),
                "lookup_us": await lookup_us(clients[name].recipients, 20_000),
            }
            for name in names
        ]
        missed = await sequential(caller(miss), misses)
        rows.append(
            {"what": "miss: exchange every message", **summary(missed, scale=1000, suffix="_ms")}
        )
        by = {row["what"]: row for row in rows}
        return {
            "rows": rows,
            "after_over_before": {
                "p50": by["after"]["p50_ms"] / by["before"]["p50_ms"],
                "p99": by["after"]["p99_ms"] / by["before"]["p99_ms"],
                f"throughput_{INFLIGHT}_inflight": by["after"]["per_second"]
                / by["before"]["per_second"],
            },
            "exchanges_by_the_cached_client": after.recipients.exchanges,
        }
    finally:
        for c in (after, before, miss):
            await c.close()


async def exchanges(mesh: Mesh, count: int) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        subject = await mesh.exchange(session, CALLER)
        one = {"grantType": GRANT_TOKEN_EXCHANGE, "subjectToken": subject}
        batch = dict(one, audiences=[f"{NAMESPACE}/agent-{i}" for i in range(1, 21)])
        one["audience"] = f"{NAMESPACE}/{RECEIVER}"
        rows = []
        for what, body in (("exchange, 1 recipient", one), ("exchange, 20 recipients", batch)):

            async def post(body: dict[str, Any] = body) -> None:
                async with session.post(f"{mesh.url}/v1/token", json=body) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"exchange refused: HTTP {response.status}")

            await sequential(post, 20)
            rows.append(
                {"what": what, **summary(await sequential(post, count), scale=1000, suffix="_ms")}
            )
        return rows


async def operator_tokens(seconds: float) -> list[dict[str, Any]]:
    """Authority.operator_token() in this process: a cache hit, and a new token signed."""
    from agent_mesh.auth.audit import AuditLog
    from agent_mesh.auth.authority import AuthSettings
    from agent_mesh.domain.clock import SystemClock
    from common.meshserver import authority, fleet

    auth = await authority(fleet(2), SystemClock(), AuditLog(), AuthSettings(audit_allowed=False))
    identity = AgentIdentity("agent-mesh-operator", "mesh-operator", NAMESPACE, (), "op")
    audience, lifetime = f"{NAMESPACE}/{RECEIVER}", dt.timedelta(seconds=310)
    auth.operator_token(NAMESPACE, RECEIVER, 310)
    return [
        {
            "what": "operator token, cached",
            "us": per_call_us(lambda: auth.operator_token(NAMESPACE, RECEIVER, 310), seconds),
        },
        {
            "what": "operator token, signed",
            "us": per_call_us(
                lambda: auth.issuer.issue(identity, audience=audience, lifetime=lifetime),
                seconds,
            ),
        },
    ]


def main() -> int:
    parser = cli.BenchParser(__doc__)
    parser.size("--count", quick=300, full=1000, help="requests per side per round")
    parser.size("--rounds", quick=2, full=5, help="rounds of before/after")
    parser.size("--misses", quick=100, full=300, help="requests exchanging a token each")
    args = parser.parse()
    mesh_port, agent_port = free_port(), free_port()
    mesh = Mesh(local_url(mesh_port), NAMESPACE, CREDENTIAL)
    from common.meshserver import serve

    with (
        Child("mesh API", serve, mesh_port, free_port(), 21),
        Child("receiving Agent", serve_receiver, mesh, agent_port),
    ):
        receiver = local_url(agent_port)
        figures = asyncio.run(round_trips(mesh, receiver, args.count, args.rounds, args.misses))
        figures["exchange"] = asyncio.run(exchanges(mesh, args.misses))
    figures["operator"] = asyncio.run(operator_tokens(0.5 if args.quick else 2.0))

    ms = [Column("p50 ms", 8, ".3f", "p50_ms"), Column("p99 ms", 8, ".3f", "p99_ms")]
    print(
        table(
            [
                label(30, "MeshClient.request -> Agent", "what"),
                *ms,
                Column("msg/s", 8, ",.0f", "per_second"),
                Column("lookup us", 10, ".2f", "lookup_us"),
            ],
            figures["rows"],
        )
    )
    ratio = figures["after_over_before"]
    print(
        f"after / before: p50 x{ratio['p50']:.3f}, p99 x{ratio['p99']:.3f}, "
        f"{INFLIGHT} in flight x{ratio[f'throughput_{INFLIGHT}_inflight']:.3f} "
        f"(exchanges by the cached client: {figures['exchanges_by_the_cached_client']})"
    )
    print(table([label(30, "", "what"), *ms], figures["exchange"]))
    print(table([label(30, "", "what"), Column("us", 8, ".1f", "us")], figures["operator"]))
    write_result("audience", {"quick": args.quick, "sizes": vars(args), **figures})
    return 0


if __name__ == "__main__":
    cli.run(main)
