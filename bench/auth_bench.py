"""Identity and authorization costs: token verification and ACL decisions per second on
one core, and the latency of an authenticated no-op mesh call against an unauthenticated
baseline on the same server, with the load generator in its own process.

    .venv/bin/python bench/auth_bench.py [--quick]

Prints a table and writes bench/results/auth.json. Asserts nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
from typing import Any

import aiohttp

from agent_mesh.auth.keys import ALGORITHMS, KeyRing
from agent_mesh.auth.revocation import RevocationList
from agent_mesh.auth.tokens import AgentIdentity, TokenIssuer, TokenVerifier
from agent_mesh.domain.acl import Action, PolicyIndex, policy_from_spec
from agent_mesh.domain.clock import SystemClock
from common import cli
from common.children import Child
from common.harness import Mesh, free_port, local_url
from common.load import calls_per_second, per_second, sequential
from common.meshserver import CREDENTIAL, NAMESPACE, serve
from common.output import Column, label, table, write_result
from common.stats import summary


def bench_tokens(seconds: float) -> list[dict[str, Any]]:
    rows = []
    clock = SystemClock()
    for algorithm in ALGORITHMS:  # EdDSA, ES256
        ring = KeyRing.generate(algorithm, clock.now())

        def keys(r: KeyRing = ring) -> KeyRing:
            return r

        issuer = TokenIssuer(keys, clock)
        tokens = [
            issuer.issue(AgentIdentity(f"agent-{i}", "worker", "ns", ("summarize",), f"u{i}"))[0]
            for i in range(2000)
        ]
        cold = TokenVerifier(keys, clock, RevocationList(), cache_size=0)
        warm = TokenVerifier(keys, clock, RevocationList())
        for token in tokens:
            warm.verify(token)
        rows.append(
            {
                "what": f"verify {algorithm}, signature checked",
                "per_second": calls_per_second(cold.verify, tokens, seconds),
            }
        )
        rows.append(
            {
                "what": f"verify {algorithm}, repeat token (cache)",
                "per_second": calls_per_second(warm.verify, tokens, seconds),
            }
        )

        def issue(_: int, i: TokenIssuer = issuer) -> object:
            return i.issue(AgentIdentity("a", "worker", "ns", (), "u"))

        rows.append(
            {
                "what": f"issue {algorithm}",
                "per_second": calls_per_second(issue, list(range(200)), seconds),
            }
        )
    return rows


def bench_acl(seconds: float) -> list[dict[str, Any]]:
    index = PolicyIndex()
    for i in range(200):
        spec = {
            "agentType": f"custom-{i}",
            "allowedActions": ["read", "execute"],
            "allowedResources": ["tasks", "results"],
            "deniedActions": ["admin"],
        }
        index.upsert(
            f"ns-{i % 20}",
            f"p{i}",
            dt.datetime.now(dt.UTC),
            policy_from_spec(f"ns-{i % 20}", f"p{i}", spec),
        )
    types = ["worker", "monitor", "orchestrator", "governor", *[f"custom-{i}" for i in range(50)]]
    actions = [Action.READ, Action.WRITE, Action.EXECUTE, Action.ADMIN]
    resources = ["tasks", "results", "agents", "acl", "audit", "events"]
    rng = random.Random(7)
    queries = [
        (
            rng.choice(types),
            f"ns-{rng.randrange(20)}",
            rng.choice(actions),
            rng.choice(resources),
            f"ns-{rng.randrange(20)}",
        )
        for _ in range(5000)
    ]

    def decide(q: tuple[str, str, Action, str, str]) -> None:
        index.decide(*q)

    warm = calls_per_second(decide, queries, seconds)

    def decide_cold(q: tuple[str, str, Action, str, str]) -> None:
        index._cache.clear()
        index.decide(*q)

    cold = calls_per_second(decide_cold, queries, seconds)
    return [
        {"what": "ACL decision (cached)", "per_second": warm},
        {"what": "ACL decision (uncached)", "per_second": cold},
    ]


async def bench_http(port: int, count: int) -> list[dict[str, Any]]:
    base = local_url(port)
    mesh = Mesh(base, NAMESPACE, CREDENTIAL)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        auth = {"Authorization": f"Bearer {await mesh.exchange(session, 'agent-0')}"}
        cases = [
            ("GET /healthz (unauthenticated baseline)", f"{base}/healthz", {}),
            ("GET /v1/whoami (token verified)", f"{base}/v1/whoami", auth),
        ]
        rows: list[dict[str, Any]] = []
        for what, url, headers in cases:

            async def get(u: str = url, h: dict[str, str] = headers) -> None:
                async with session.get(u, headers=h) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"GET {u}: HTTP {response.status}")

            await sequential(get, 200)  # warm up
            lat = await sequential(get, count)
            rps = await per_second(get, count * 2, 32)
            rows.append(
                {
                    "what": what,
                    **summary(lat, scale=1000, suffix="_ms"),
                    "per_second_32_inflight": rps,
                }
            )
        base_row, auth_row = rows
        auth_row["p50_ratio_to_baseline"] = auth_row["p50_ms"] / base_row["p50_ms"]
        auth_row["p99_ratio_to_baseline"] = auth_row["p99_ms"] / base_row["p99_ms"]
        auth_row["throughput_ratio_to_baseline"] = (
            auth_row["per_second_32_inflight"] / base_row["per_second_32_inflight"]
        )
        return rows


def main() -> int:
    parser = cli.BenchParser(__doc__)
    args = parser.parse()
    seconds = cli.quick_or_full(args, 0.3, 2.0)
    count = cli.quick_or_full(args, 300, 3000)

    os.sched_setaffinity(0, {0})  # "per second on one core"
    tokens = bench_tokens(seconds)
    acl = bench_acl(seconds)
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))

    port = free_port()
    with Child("mesh API", serve, port, free_port(), 1):
        http = asyncio.run(bench_http(port, count))

    what = "what"
    print(
        table(
            [
                label(46, "in-process, one core", what),
                Column("per second", 12, ",.0f", "per_second"),
            ],
            tokens + acl,
        )
    )
    print()
    ms = ".3f"
    print(
        table(
            [
                label(42, "mesh API on loopback", what),
                Column("p50 ms", 8, ms, "p50_ms"),
                Column("p99 ms", 8, ms, "p99_ms"),
                Column("req/s @32", 10, ",.0f", "per_second_32_inflight"),
            ],
            http,
        )
    )
    authed = http[1]
    print(
        f"authenticated / baseline: p50 x{authed['p50_ratio_to_baseline']:.2f}, "
        f"p99 x{authed['p99_ratio_to_baseline']:.2f}, "
        f"throughput x{authed['throughput_ratio_to_baseline']:.2f}"
    )
    write_result("auth", {"quick": args.quick, "in_process_one_core": tokens + acl, "http": http})
    return 0


if __name__ == "__main__":
    cli.run(main)
