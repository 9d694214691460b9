"""Request/response: Transport.request() to one SDK Agent in another process, next to raw
aiohttp calling a bare aiohttp server (its own process); sequential p50/p99, messages/s
at each concurrency with the CPU each end spends per message, rounds alternating ours
and raw; then ours with a token the Agent has never seen on every message."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agent_mesh.domain.message import Message, MessageType
from agent_mesh.transport.client import Transport
from common.children import Child
from common.harness import Mesh, listen_ports, local_url
from common.load import per_second, sequential
from common.output import Column, label, table
from common.procfs import cpu_seconds
from common.stats import summary

from .parts import (
    CALLER,
    MESSAGES,
    PAYLOAD,
    RECEIVER,
    Call,
    Clients,
    counting,
    serve_agents,
    serve_raw,
)


@dataclass(frozen=True)
class Sizes:
    sequential: int  # calls timed one at a time, per round
    total: int  # calls per throughput run
    fresh_total: int  # calls with a new token each, in flight
    rounds: int
    concurrency: tuple[int, ...] = (16, 64)


async def throughput_with_cpu(
    call: Call, count: int, concurrency: int, server_pid: int
) -> dict[str, float]:
    server0, client0 = cpu_seconds(server_pid), time.process_time()
    rate = await per_second(call, count, concurrency)
    return {
        "per_second": rate,
        "server_cpu_us_per_msg": (cpu_seconds(server_pid) - server0) / count * 1e6,
        "client_cpu_us_per_msg": (time.process_time() - client0) / count * 1e6,
    }


async def checks(clients: Clients) -> dict[str, Any]:
    """That the Agent really refuses a bad token, and the sizes of both replies."""
    envelope = Message.new(MessageType.REQUEST, CALLER, RECEIVER, PAYLOAD).to_wire()
    token = clients.headers["Authorization"]
    sizes: dict[str, Any] = {}
    for name, url, authorization in (
        ("ours", clients.ours_url + MESSAGES, token),
        ("raw", clients.raw_url, token),
        ("ours, forged token", clients.ours_url + MESSAGES, token[:-4]),
    ):
        async with clients.session.post(
            url, json=envelope, headers={"Authorization": authorization}
        ) as response:
            body = await response.read()
            sizes[name] = {"status": response.status, "reply_bytes": len(body)}
    sizes["request_bytes"] = len(json.dumps(envelope))
    if sizes["ours, forged token"]["status"] != 401:
        raise RuntimeError(f"the Agent accepted a forged token: {sizes}")
    return sizes


async def measure(
    mesh: Mesh, agent: Child, ours_url: str, raw: Child, raw_url: str, sizes: Sizes
) -> dict[str, Any]:
    clients = Clients(mesh, ours_url, raw_url)
    await clients.start()
    try:
        checked = await checks(clients)
        servers = {"ours": agent.pid, "raw": raw.pid}
        failures: dict[str, Counter[str]] = {"ours": Counter(), "raw": Counter()}
        calls = {
            "ours": counting(clients.ours, failures["ours"]),
            "raw": counting(clients.raw, failures["raw"]),
        }
        for call in calls.values():  # warm up: connections, caches, first token verify
            await sequential(call, 300)
            await per_second(call, 1000, 64)
        for counter in failures.values():
            counter.clear()
        latencies: dict[str, list[float]] = {name: [] for name in calls}
        runs: dict[str, dict[int, list[dict[str, float]]]] = {
            name: {c: [] for c in sizes.concurrency} for name in calls
        }
        for _ in range(sizes.rounds):  # alternate, so drift hits both alike
            for name, call in calls.items():
                latencies[name] += await sequential(call, sizes.sequential)
            for concurrency in sizes.concurrency:
                for name, call in calls.items():
                    runs[name][concurrency].append(
                        await throughput_with_cpu(call, sizes.total, concurrency, servers[name])
                    )
        rows: dict[str, dict[str, Any]] = {}
        for name in calls:
            row: dict[str, Any] = summary(latencies[name], scale=1000, suffix="_ms")
            for concurrency, samples in runs[name].items():
                for key in samples[0]:
                    row[f"{key}_{concurrency}_inflight"] = statistics.median(
                        s[key] for s in samples
                    )
            rows[name] = row
        rows["ours, new token every message"] = await fresh_tokens(
            mesh, agent, ours_url, sizes, failures
        )
        ours, base = rows["ours"], rows["raw"]
        ratios = {
            "p50": ours["p50_ms"] / base["p50_ms"],
            "p99": ours["p99_ms"] / base["p99_ms"],
            **{
                f"throughput_{c}_inflight": ours[f"per_second_{c}_inflight"]
                / base[f"per_second_{c}_inflight"]
                for c in sizes.concurrency
            },
        }
        return {
            "connections_per_agent": clients.transport.config.max_connections_per_agent,
            "sequential_per_round": sizes.sequential,
            "messages_per_throughput_run": sizes.total,
            "rounds": sizes.rounds,
            "checks": checked,
            "rows": rows,
            "failures": {name: dict(counter) for name, counter in failures.items() if counter},
            "ours_over_raw": ratios,
        }
    finally:
        await clients.close()


async def fresh_tokens(
    mesh: Mesh, agent: Child, ours_url: str, sizes: Sizes, failures: dict[str, Counter[str]]
) -> dict[str, Any]:
    """The worst case: every message carries a token the Agent has not seen (signature
    verified each time), as on a caller's first contact or after renewal."""
    count = sizes.sequential + sizes.fresh_total
    pool = iter(await mesh.exchange_all([CALLER] * count))

    async def fresh_token() -> str:
        return next(pool)

    fresh = Transport(token=fresh_token)

    async def ours_fresh() -> None:
        message = Message.new(MessageType.REQUEST, CALLER, RECEIVER, PAYLOAD)
        await fresh.request(ours_url, message)

    name = "ours, new token every message"
    failures[name] = Counter()
    fresh_call = counting(ours_fresh, failures[name])
    try:
        lat = await sequential(fresh_call, sizes.sequential)
        burst = await throughput_with_cpu(fresh_call, sizes.fresh_total, 64, agent.pid)
    finally:
        await fresh.close()
    return {
        **summary(lat, scale=1000, suffix="_ms"),
        **{f"{key}_64_inflight": value for key, value in burst.items()},
    }


def run(mesh: Mesh, sizes: Sizes) -> dict[str, Any]:
    """One Agent process and one raw server process, measured against each other."""
    agent_port, raw_port = listen_ports(2)
    with (
        Child("agent", serve_agents, mesh, [RECEIVER], [agent_port], None) as agent,
        Child("raw server", serve_raw, [raw_port], None) as raw,
    ):
        return asyncio.run(
            measure(mesh, agent, local_url(agent_port), raw, local_url(raw_port), sizes)
        )


def report(rr: dict[str, Any]) -> None:
    us = ".0f"
    print(
        table(
            [
                label(32, "", "name"),
                Column("p50 ms", 7, ".3f", "p50_ms"),
                Column("p99 ms", 7, ".3f", "p99_ms"),
                Column("msg/s@16", 9, ",.0f", "per_second_16_inflight"),
                Column("msg/s@64", 9, ",.0f", "per_second_64_inflight"),
                Column("srv µs/msg", 10, us, "server_cpu_us_per_msg_64_inflight"),
                Column("cli µs/msg", 10, us, "client_cpu_us_per_msg_64_inflight"),
            ],
            [{"name": name, **row} for name, row in rr["rows"].items()],
            f"request/response, one Agent ({rr['connections_per_agent']} connections per agent)",
        )
    )
    for name, seen in rr["failures"].items():
        print(f"failed calls, {name}: {seen}")
    r = rr["ours_over_raw"]
    print(
        f"ours / raw: p50 x{r['p50']:.2f}, p99 x{r['p99']:.2f}, throughput @16"
        f" x{r['throughput_16_inflight']:.2f}, @64 x{r['throughput_64_inflight']:.2f}"
    )
    print()
