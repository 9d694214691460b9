"""CPU per round trip with both ends in this process and event loop, for each pairing of
caller (raw, Transport) and receiver (bare aiohttp, Agent): no scheduler between the
ends, so the difference between pairings is what each side of the mesh adds."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from common.harness import Mesh, listen_ports, local_url, serve_app
from common.load import sequential

from .parts import RECEIVER, Call, Clients, echo_agent, raw_app


async def measure(mesh: Mesh, count: int, rounds: int) -> dict[str, Any]:
    """The best of `rounds` windows per pairing, the windows interleaved. This Agent is
    served with its app() (keys fetched, default policies, no heartbeat)."""
    agent_port, raw_port = listen_ports(2)
    agent = echo_agent(mesh, RECEIVER, agent_port)
    await agent.tokens.token()
    await agent.refresh_keys()
    runners = [await serve_app(agent.app(), agent_port), await serve_app(raw_app(), raw_port)]
    to_agent, to_raw = local_url(agent_port), local_url(raw_port)
    raw_to_raw = Clients(mesh, to_agent, to_raw)
    raw_to_agent = Clients(mesh, to_agent, to_agent)  # its raw() calls the Agent
    ours_to_raw = Clients(mesh, to_raw, to_raw)  # its ours() calls the bare server
    clients = (raw_to_raw, raw_to_agent, ours_to_raw)
    try:
        for c in clients:
            await c.start()
        pairings: dict[str, Call] = {
            "raw -> bare": raw_to_raw.raw,
            "Transport -> bare": ours_to_raw.ours,
            "raw -> Agent": raw_to_agent.raw,
            "Transport -> Agent": raw_to_raw.ours,
        }
        for call in pairings.values():
            await sequential(call, 200)
        best = dict.fromkeys(pairings, math.inf)
        for _ in range(rounds):
            for name, call in pairings.items():
                start = time.process_time()
                await sequential(call, count)
                best[name] = min(best[name], (time.process_time() - start) / count * 1e6)
    finally:
        for c in clients:
            await c.close()
        for runner in runners:
            await runner.cleanup()
    base = best["raw -> bare"]
    return {
        "cpu_us_per_round_trip": best,
        "caller_adds_us": best["Transport -> bare"] - base,
        "receiver_adds_us": best["raw -> Agent"] - base,
        "both_add_us": best["Transport -> Agent"] - base,
    }


def run(mesh: Mesh, count: int, rounds: int) -> dict[str, Any]:
    return asyncio.run(measure(mesh, count, rounds))


def report(split: dict[str, Any]) -> None:
    print("CPU per round trip, both ends in one process and loop (best window, µs)")
    for name, us in split["cpu_us_per_round_trip"].items():
        print(f"  {name:<20} {us:>6.0f}")
    print(
        f"the Transport as caller adds {split['caller_adds_us']:.0f} µs, the Agent as"
        f" receiver {split['receiver_adds_us']:.0f} µs, both {split['both_add_us']:.0f} µs"
    )
    print()
