"""Identity and authorization costs: token verification and ACL decisions per second on
one core, and the latency of an authenticated no-op mesh call against an unauthenticated
baseline on the same server, with the load generator in its own process.

    .venv/bin/python bench/auth_bench.py [--quick]

Prints a table and writes bench/results/auth.json. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from meshserver import CREDENTIAL, NAMESPACE, ServerProcess

from agent_mesh.auth.keys import KeyRing
from agent_mesh.auth.revocation import RevocationList
from agent_mesh.auth.tokens import AgentIdentity, TokenIssuer, TokenVerifier
from agent_mesh.domain.acl import Action, PolicyIndex, policy_from_spec
from agent_mesh.domain.clock import SystemClock
from agent_mesh.ports import free_port

RESULTS = Path(__file__).parent / "results"


def per_second(fn: Any, items: list[Any], seconds: float) -> float:
    """Calls of `fn` per second, cycling through `items`, for about `seconds`."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for item in items:
            fn(item)
        done += len(items)
    return done / (time.perf_counter() - start)


def bench_tokens(seconds: float) -> list[dict[str, Any]]:
    rows = []
    clock = SystemClock()
    for algorithm in ("EdDSA", "ES256"):
        ring = KeyRing.generate(algorithm, clock.now())  # type: ignore[arg-type]
        issuer = TokenIssuer(lambda r=ring: r, clock)
        tokens = [
            issuer.issue(AgentIdentity(f"agent-{i}", "worker", "ns", ("summarize",), f"u{i}"))[0]
            for i in range(2000)
        ]
        cold = TokenVerifier(lambda r=ring: r, clock, RevocationList(), cache_size=0)
        warm = TokenVerifier(lambda r=ring: r, clock, RevocationList())
        for token in tokens:
            warm.verify(token)
        rows.append(
            {
                "what": f"verify {algorithm}, signature checked",
                "per_second": per_second(cold.verify, tokens, seconds),
            }
        )
        rows.append(
            {
                "what": f"verify {algorithm}, repeat token (cache)",
                "per_second": per_second(warm.verify, tokens, seconds),
            }
        )
        rows.append(
            {
                "what": f"issue {algorithm}",
                "per_second": per_second(
                    lambda _, i=issuer: i.issue(AgentIdentity("a", "worker", "ns", (), "u")),
                    list(range(200)),
                    seconds,
                ),
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

    warm = per_second(decide, queries, seconds)

    def decide_cold(q: tuple[str, str, Action, str, str]) -> None:
        index._cache.clear()
        index.decide(*q)

    cold = per_second(decide_cold, queries, seconds)
    return [
        {"what": "ACL decision (cached)", "per_second": warm},
        {"what": "ACL decision (uncached)", "per_second": cold},
    ]


async def latencies(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], count: int
) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        async with session.get(url, headers=headers) as response:
            await response.read()
            assert response.status == 200, response.status
        out.append(time.perf_counter() - start)
    return out


async def throughput(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], count: int, inflight: int
) -> float:
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.get(url, headers=headers) as response:
                await response.read()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return count / (time.perf_counter() - start)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_http(port: int, count: int) -> list[dict[str, Any]]:
    base = f"http://127.0.0.1:{port}"
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(
            f"{base}/v1/token",
            json={"namespace": NAMESPACE, "agentId": "agent-0", "credential": CREDENTIAL},
        ) as response:
            token = (await response.json())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        cases = [
            ("GET /healthz (unauthenticated baseline)", f"{base}/healthz", {}),
            ("GET /v1/whoami (token verified)", f"{base}/v1/whoami", auth),
        ]
        rows = []
        for what, url, headers in cases:
            await latencies(session, url, headers, 200)  # warm up
            lat = await latencies(session, url, headers, count)
            rps = await throughput(session, url, headers, count * 2, 32)
            rows.append(
                {
                    "what": what,
                    "p50_ms": statistics.median(lat) * 1000,
                    "p99_ms": pct(lat, 0.99) * 1000,
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke)")
    args = parser.parse_args()
    seconds = 0.3 if args.quick else 2.0
    count = 300 if args.quick else 3000

    os.sched_setaffinity(0, {0})  # "per second on one core"
    tokens = bench_tokens(seconds)
    acl = bench_acl(seconds)
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))

    port = free_port()
    with ServerProcess(port, agents=1):
        http = asyncio.run(bench_http(port, count))

    print(f"{'in-process, one core':<46} {'per second':>12}")
    for row in tokens + acl:
        print(f"{row['what']:<46} {row['per_second']:>12,.0f}")
    print()
    print(f"{'mesh API on loopback':<42} {'p50 ms':>8} {'p99 ms':>8} {'req/s @32':>10}")
    for row in http:
        print(
            f"{row['what']:<42} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} "
            f"{row['per_second_32_inflight']:>10,.0f}"
        )
    authed = http[1]
    print(
        f"authenticated / baseline: p50 x{authed['p50_ratio_to_baseline']:.2f}, "
        f"p99 x{authed['p99_ratio_to_baseline']:.2f}, "
        f"throughput x{authed['throughput_ratio_to_baseline']:.2f}"
    )
    RESULTS.mkdir(exist_ok=True)
    result = {
        "benchmark": "auth",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "quick": args.quick,
        "in_process_one_core": tokens + acl,
        "http": http,
    }
    (RESULTS / "auth.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'auth.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
