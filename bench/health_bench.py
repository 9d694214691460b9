"""Discovery and health at fleet sizes: heartbeat ingest through the mesh API against a
bare aiohttp endpoint on the same server (load generator in its own process), the status
writes the apiserver would receive, discovery query latency, and memory per agent.

    .venv/bin/python bench/health_bench.py [--quick]

Prints a table and writes bench/results/health.json. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp
from meshserver import CREDENTIAL, NAMESPACE, ServerProcess, agent

from agent_mesh.domain.agents import AgentRegistry
from agent_mesh.domain.clock import FakeClock
from agent_mesh.domain.discovery import AgentQuery, discover
from agent_mesh.domain.health import HealthPolicy, HealthTracker
from agent_mesh.ports import free_port

RESULTS = Path(__file__).parent / "results"
INFLIGHT = 64


async def tokens_for(session: aiohttp.ClientSession, base: str, agents: int) -> list[str]:
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> str:
        async with (
            sem,
            session.post(
                f"{base}/v1/token",
                json={"namespace": NAMESPACE, "agentId": f"agent-{i}", "credential": CREDENTIAL},
            ) as response,
        ):
            return str((await response.json())["token"])

    return list(await asyncio.gather(*(one(i) for i in range(agents))))


async def drive(
    session: aiohttp.ClientSession, urls: list[tuple[str, dict[str, str]]], total: int
) -> float:
    """Requests per second with INFLIGHT concurrent requests cycling through `urls`."""
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < total:
            url, headers = urls[position % len(urls)]
            position += 1
            async with session.post(url, json={"activeTasks": 1}, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url}: {response.status}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(INFLIGHT)))
    return total / (time.perf_counter() - start)


async def ingest(agents: int, total: int) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with ServerProcess(port, agents) as server:
        connector = aiohttp.TCPConnector(limit=INFLIGHT)
        async with aiohttp.ClientSession(connector=connector) as session:
            tokens = await tokens_for(session, base, agents)
            beats = [
                (
                    f"{base}/v1/agents/{NAMESPACE}/agent-{i}/heartbeat",
                    {"Authorization": f"Bearer {token}"},
                )
                for i, token in enumerate(tokens)
            ]
            bare = f"http://127.0.0.1:{server.bare_port}/noop"
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
    timings.sort()
    return {
        "agents": agents,
        "p50_ms": statistics.median(timings) * 1000,
        "p99_ms": timings[int(0.99 * len(timings))] * 1000,
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke)")
    args = parser.parse_args()
    sizes = [100, 1000] if args.quick else [1000, 10_000]
    total = 3000 if args.quick else 30_000

    ingest_rows = [asyncio.run(ingest(n, total)) for n in sizes]
    write_rows = [status_writes(n, 10.0, 60 if args.quick else 300) for n in sizes]
    query_rows = [queries(n, 500 if args.quick else 5000) for n in sizes]
    memory_rows = [memory(n) for n in sizes]

    print(
        f"{'heartbeat ingest (64 in flight)':<34} {'beats/s':>9} {'bare/s':>9} {'ratio':>6}"
        f" {'first beat/s':>13}"
    )
    for r in ingest_rows:
        print(
            f"{r['agents']:>7,} agents{'':<20} {r['heartbeats_per_second']:>9,.0f} "
            f"{r['bare_aiohttp_per_second']:>9,.0f} {r['ratio_to_bare_aiohttp']:>6.2f} "
            f"{r['first_beat_per_agent_per_second']:>13,.0f}"
        )
    print(
        f"\n{'status writes (beats every 10 s)':<34} {'beats/s':>9} {'writes/s':>9} "
        f"{'per agent per 30 s':>19}"
    )
    for r in write_rows:
        print(
            f"{r['agents']:>7,} agents{'':<20} {r['heartbeats_per_second']:>9,.0f} "
            f"{r['status_writes_per_second_steady']:>9,.1f} {r['writes_per_agent_per_30s']:>19.2f}"
        )
    print(f"\n{'discovery query':<34} {'p50 ms':>9} {'p99 ms':>9}")
    for r in query_rows:
        print(f"{r['agents']:>7,} agents{'':<20} {r['p50_ms']:>9.4f} {r['p99_ms']:>9.4f}")
    print(f"\n{'memory (registry + health)':<34} {'bytes/agent':>12}")
    for r in memory_rows:
        print(f"{r['agents']:>7,} agents{'':<20} {r['bytes_per_agent']:>12,.0f}")

    RESULTS.mkdir(exist_ok=True)
    out = {
        "benchmark": "health",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "quick": args.quick,
        "ingest": ingest_rows,
        "status_writes": write_rows,
        "queries": query_rows,
        "memory": memory_rows,
        "when": dt.datetime.now(dt.UTC).isoformat(),
    }
    (RESULTS / "health.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'health.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
