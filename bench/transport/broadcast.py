"""Broadcast: Transport.broadcast() of an event to many Agents (spread over a few
processes, each Agent on its own port), time until every outcome is in, against one
aiohttp session's asyncio.gather to as many bare sites."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from typing import Any

import aiohttp

from agent_mesh.domain.message import BROADCAST, Message, MessageType
from agent_mesh.transport.client import Outcome, Transport
from common.children import Child
from common.harness import Mesh, listen_ports, local_url
from common.output import Column, label, table
from common.procfs import cpu_seconds
from common.stats import summary

from .parts import CALLER, MESSAGES, error_name, raw_envelope, serve_agents, serve_raw


async def measure(
    mesh: Mesh,
    ours: dict[str, str],
    raw: list[str],
    count: int,
    server_pids: dict[str, list[int]],
) -> dict[str, Any]:
    source = mesh.tokens(CALLER)
    token = await source.token()
    transport = Transport(token=source.token)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    failures: Counter[str] = Counter()

    async def ours_once(seq: int) -> None:
        message = Message.new(MessageType.EVENT, CALLER, BROADCAST, {"seq": seq})
        deliveries = await transport.broadcast(ours, message)
        for delivery in deliveries.values():
            if delivery.outcome is not Outcome.OK or delivery.status != 202:
                failures[f"ours: {delivery.outcome.value} {delivery.status}"] += 1

    async def raw_post(url: str, body: str) -> None:
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 202:
                    failures[f"raw: {response.status}"] += 1
        except (aiohttp.ClientError, TimeoutError) as error:
            failures[f"raw: {error_name(error)}"] += 1

    async def raw_once(seq: int) -> None:
        body = json.dumps(raw_envelope(CALLER, BROADCAST, "event", {"seq": seq}))
        await asyncio.gather(*(raw_post(url, body) for url in raw))

    try:
        for seq in range(5):  # warm up: a connection to every target
            await ours_once(seq)
            await raw_once(seq)
        failures.clear()
        times: dict[str, list[float]] = {"ours": [], "raw": []}
        cpu: dict[str, dict[str, float]] = {name: {"client": 0.0, "servers": 0.0} for name in times}
        for seq in range(count):  # interleaved, so drift hits both alike
            for name, once in (("ours", ours_once), ("raw", raw_once)):
                servers0 = cpu_seconds(*server_pids[name])
                client0 = time.process_time()
                start = time.perf_counter()
                await once(seq)
                times[name].append(time.perf_counter() - start)
                cpu[name]["client"] += time.process_time() - client0
                cpu[name]["servers"] += cpu_seconds(*server_pids[name]) - servers0
    finally:
        await transport.close()
        await session.close()
    rows = {
        name: {
            **summary(t, scale=1000, suffix="_ms"),
            "mean_ms": statistics.fmean(t) * 1000,
            "client_cpu_ms_per_broadcast": cpu[name]["client"] / count * 1000,
            "servers_cpu_ms_per_broadcast": cpu[name]["servers"] / count * 1000,
        }
        for name, t in times.items()
    }
    return {
        "targets": len(ours),
        "broadcasts": count,
        "failed_deliveries": dict(failures),
        "rows": rows,
        "ours_over_raw": {
            "p50": rows["ours"]["p50_ms"] / rows["raw"]["p50_ms"],
            "p99": rows["ours"]["p99_ms"] / rows["raw"]["p99_ms"],
        },
    }


def run(mesh: Mesh, targets: int, procs: int, count: int) -> dict[str, Any]:
    """`targets` Agents (agent-1 …) and as many bare sites, each kind over `procs`
    processes; `count` broadcasts of each."""
    ids = [f"agent-{1 + i}" for i in range(targets)]
    ports = listen_ports(2 * targets)
    ports, raw_ports = ports[:targets], ports[targets:]
    groups = [list(range(targets))[p::procs] for p in range(procs)]
    agents = [
        Child(
            f"agents {p}",
            serve_agents,
            mesh,
            [ids[i] for i in group],
            [ports[i] for i in group],
            None,
        )
        for p, group in enumerate(groups)
    ]
    raws = [
        Child(f"raw sites {p}", serve_raw, [raw_ports[i] for i in group], None)
        for p, group in enumerate(groups)
    ]
    try:
        for child in agents + raws:
            child.start()
        result = asyncio.run(
            measure(
                mesh,
                {agent_id: local_url(port) for agent_id, port in zip(ids, ports, strict=True)},
                [f"{local_url(port)}{MESSAGES}" for port in raw_ports],
                count,
                {"ours": [c.pid for c in agents], "raw": [c.pid for c in raws]},
            )
        )
    finally:
        for child in agents + raws:
            child.stop()
    result["server_processes"] = procs
    result["agents_per_process"] = [len(g) for g in groups]
    return result


def report(bc: dict[str, Any]) -> None:
    ms = ".2f"
    print(
        table(
            [
                label(8, "", "name"),
                Column("p50 ms", 8, ms, "p50_ms"),
                Column("p99 ms", 8, ms, "p99_ms"),
                Column("mean ms", 8, ms, "mean_ms"),
                Column("client CPU ms", 14, ms, "client_cpu_ms_per_broadcast"),
                Column("servers CPU ms", 15, ms, "servers_cpu_ms_per_broadcast"),
            ],
            [{"name": name, **row} for name, row in bc["rows"].items()],
            f"broadcast of an event to {bc['targets']} agents in {bc['server_processes']}"
            f" processes, {bc['broadcasts']} broadcasts",
        )
    )
    r = bc["ours_over_raw"]
    print(f"ours / raw: p50 x{r['p50']:.2f}, p99 x{r['p99']:.2f}")
    if bc["failed_deliveries"]:
        print(f"failed deliveries: {bc['failed_deliveries']}")
    print()
