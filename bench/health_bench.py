"""Discovery and health at fleet sizes: heartbeat ingest through the mesh API against a
bare aiohttp endpoint on the same server (load generator in its own process), the status
writes the apiserver would receive, discovery query latency, and memory per agent.

    .venv/bin/python bench/health_bench.py [--quick]

Prints a table and writes bench/results/health.json. Asserts nothing.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
import tracemalloc
from typing import Any

import aiohttp

from agent_mesh.domain.agents import AgentRegistry
from agent_mesh.domain.clock import FakeClock
from agent_mesh.domain.discovery import AgentQuery, discover
from agent_mesh.domain.health import HealthPolicy, HealthTracker
from common import cli
from common.children import Child
from common.harness import Mesh, free_port, local_url
from common.load import closed_loop
from common.meshserver import CREDENTIAL, NAMESPACE, agent, serve
from common.output import Column, fleet_label, table, write_result
from common.stats import summary

INFLIGHT = 64


async def drive(
    session: aiohttp.ClientSession, urls: list[tuple[str, dict[str, str]]], total: int
) -> float:
    """Requests per second with INFLIGHT concurrent requests cycling through `urls`."""

    async def beat(i: int) -> None:
        url, headers = urls[i % len(urls)]
        async with session.post(url, json={"activeTasks": 1}, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"{url}: {response.status}")

    return total / await closed_loop(beat, total, INFLIGHT)


async def ingest(agents: int, total: int) -> dict[str, Any]:
    port, bare_port = free_port(), free_port()
    base = local_url(port)
    with Child("mesh API", serve, port, bare_port, agents):
        mesh = Mesh(base, NAMESPACE, CREDENTIAL)
        tokens = await mesh.exchange_all([f"agent-{i}" for i in range(agents)], 32)
        connector = aiohttp.TCPConnector(limit=INFLIGHT)
        async with aiohttp.ClientSession(connector=connector) as session:
            beats = [
                (
                    f"{base}/v1/agents/{NAMESPACE}/agent-{i}/heartbeat",
                    {"Authorization": f"Bearer {token}"},
                )
                for i, token in enumerate(tokens)
            ]
            bare = f"{local_url(bare_port)}/noop"
            noop = [(bare, {"Authorization": f"Bearer {tokens[0]}"})]
            await drive(session, noop, 2000)  # warm up
            first_pass = await drive(session, beats, agents)  # every token verified once
            baseline = await drive(session, noop, total)
            steady = await drive(session, beats, total)  # tokens now cached
    return {
        "agents": agents,
        "heartbeats_per_second": steady,
        "first_beat_per_agent_per_second": first_pass,
        "bare_aiohttp_per_second": baseline,
        "ratio_to_bare_aiohttp": steady / baseline,
    }


def status_writes(agents: int, beat_every: float, seconds: int) -> dict[str, Any]:
    """Writes the coalescing policy lets through, on a simulated clock."""
    clock = FakeClock()
    tracker = HealthTracker(HealthPolicy())
    rng = random.Random(1)
    offsets = [rng.uniform(0, beat_every) for _ in range(agents)]
    writes = 0
    step = 1.0
    elapsed = 0.0
    next_beat = list(offsets)
    while elapsed < seconds:
        for i in range(agents):
            if next_beat[i] <= elapsed:
                tracker.beat((NAMESPACE, f"agent-{i}"), clock.now(), i % 3)
                next_beat[i] += beat_every
        for write in tracker.due(clock.now()):
            tracker.written(write, clock.now())
            writes += 1
        clock.advance(step)
        elapsed += step
    steady = writes - agents  # the first write per agent is its transition to healthy
    return {
        "agents": agents,
        "heartbeat_interval_s": beat_every,
        "simulated_s": seconds,
        "heartbeats_per_second": agents / beat_every,
        "status_writes_per_second_steady": steady / seconds,
        "writes_per_agent_per_30s": steady / agents / (seconds / 30),
    }


def fleet(agents: int) -> tuple[AgentRegistry, HealthTracker]:
    """A registry and tracker holding `agents` agents that have each sent a heartbeat."""
    registry, tracker = AgentRegistry(), HealthTracker()
    clock = FakeClock()
    for i in range(agents):
        record = agent(i)
        registry.upsert(record)
        tracker.beat((record.namespace, record.agent_id), clock.now(), 0)
    return registry, tracker


def queries(agents: int, count: int) -> dict[str, Any]:
    registry, tracker = fleet(agents)
    shapes = [
        AgentQuery(NAMESPACE, ("review",)),
        AgentQuery(NAMESPACE, ("summarize", "review"), "orchestrator"),
        AgentQuery(NAMESPACE, ("review",), None, None),
        AgentQuery(NAMESPACE, (), "orchestrator"),
    ]
    timings = []
    results = 0
    for n in range(count):
        q = shapes[n % len(shapes)]
        start = time.perf_counter()
        found = discover(registry, tracker, q, limit=100)  # the API's default limit
        timings.append(time.perf_counter() - start)
        results += len(found)
    return {
        "agents": agents,
        **summary(timings, scale=1000, suffix="_ms"),
        "mean_results": results / count,
    }


def memory(agents: int) -> dict[str, Any]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = fleet(agents)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del kept
    return {"agents": agents, "bytes_per_agent": used / agents}


def main() -> int:
    parser = cli.BenchParser(__doc__)
    args = parser.parse()
    sizes = cli.quick_or_full(args, [100, 1000], [1000, 10_000])
    total = cli.quick_or_full(args, 3000, 30_000)

    ingest_rows = [asyncio.run(ingest(n, total)) for n in sizes]
    write_rows = [status_writes(n, 10.0, cli.quick_or_full(args, 60, 300)) for n in sizes]
    query_rows = [queries(n, cli.quick_or_full(args, 500, 5000)) for n in sizes]
    memory_rows = [memory(n) for n in sizes]

    per_s = Column("beats/s", 9, ",.0f", "heartbeats_per_second")
    tables = [
        (
            [
                fleet_label("heartbeat ingest (64 in flight)"),
                per_s,
                Column("bare/s", 9, ",.0f", "bare_aiohttp_per_second"),
                Column("ratio", 6, ".2f", "ratio_to_bare_aiohttp"),
                Column("first beat/s", 13, ",.0f", "first_beat_per_agent_per_second"),
            ],
            ingest_rows,
        ),
        (
            [
                fleet_label("status writes (beats every 10 s)"),
                per_s,
                Column("writes/s", 9, ",.1f", "status_writes_per_second_steady"),
                Column("per agent per 30 s", 19, ".2f", "writes_per_agent_per_30s"),
            ],
            write_rows,
        ),
        (
            [
                fleet_label("discovery query"),
                Column("p50 ms", 9, ".4f", "p50_ms"),
                Column("p99 ms", 9, ".4f", "p99_ms"),
            ],
            query_rows,
        ),
        (
            [
                fleet_label("memory (registry + health)"),
                Column("bytes/agent", 12, ",.0f", "bytes_per_agent"),
            ],
            memory_rows,
        ),
    ]
    print("\n\n".join(table(columns, figures) for columns, figures in tables))
    write_result(
        "health",
        {
            "quick": args.quick,
            "ingest": ingest_rows,
            "status_writes": write_rows,
            "queries": query_rows,
            "memory": memory_rows,
        },
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
