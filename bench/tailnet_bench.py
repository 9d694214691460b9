"""Request/response through the tailnet against direct, in one run: the operator's
Transport.request() to one SDK Agent (another process) by its MagicDNS name, through a
userspace tailscaled's outbound HTTP proxy, the WireGuard path between two tailnet nodes
and the agent node's `tailscale serve`; and to the same Agent on loopback TCP directly.

    .venv/bin/python bench/tailnet_bench.py [--quick] [--count N] [--rounds N]
    flock /tmp/agentmesh-node.lock .venv/bin/python bench/tailnet_bench.py --pods [--quick]

The tailnet is the tests' local one (agent_mesh.devcluster.tailnet: headscale and two
userspace tailscaled on loopback, nothing leaves the machine; built on first use, needs
root), untraced here. Both rows send the same envelope with the same recipient token from
the same process, alternating in rounds; sequential p50/p99, then messages/s at 16 in
flight. Prints a table and writes bench/results/tailnet.json. Asserts nothing.

`--pods`: pod to pod on the local node instead (tailnet_pods.py): an HTTP echo server pod
and a caller pod, each with the tailscale sidecar; the caller's requests by MagicDNS name
through its sidecar's proxy against the same requests to the server's pod IP, kept alive
and with a new connection each, sequential p50/p99. Brings up the machine's node (root;
take the node lock). Writes bench/results/tailnet-pods.json.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from agent_mesh.devcluster.binaries import ensure_tailnet_binaries
from agent_mesh.devcluster.tailnet import LocalTailnet
from agent_mesh.domain.message import Message, MessageType
from agent_mesh.sdk.recipients import RecipientTokens
from agent_mesh.tailscale.sidecar import serve_config
from agent_mesh.transport.client import Transport, TransportConfig
from common import cli
from common.children import Child
from common.harness import CREDENTIAL, NAMESPACE, Mesh, listen_ports, local_url
from common.load import per_second, sequential
from common.output import Column, label, table, write_result
from common.procfs import machine_busy_seconds, others_share, own_seconds
from common.stats import summary
from transport.parts import CALLER, PAYLOAD, RECEIVER, serve_agents

INFLIGHT = 16


async def measure(
    mesh: Mesh, direct_url: str, tailnet_url: str, proxy: str, domain: str, args: Any
) -> dict[str, Any]:
    recipients = RecipientTokens(mesh.tokens(CALLER))

    async def token() -> str:
        return await recipients.token_for(mesh.namespace, RECEIVER)

    transports = {
        "direct": (Transport(token=token), direct_url),
        "tailnet": (
            Transport(TransportConfig(tailnet_proxy_url=proxy, tailnet_domain=domain), token=token),
            tailnet_url,
        ),
    }

    def caller(name: str) -> Any:
        transport, url = transports[name]

        async def call() -> None:
            await transport.request(
                url, Message.new(MessageType.REQUEST, CALLER, RECEIVER, PAYLOAD)
            )

        return call

    calls = {name: caller(name) for name in transports}
    try:
        for call in calls.values():  # warm up: connections, the token, the tailnet path
            await sequential(call, 200)
        latencies: dict[str, list[float]] = {name: [] for name in calls}
        rates: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.rounds):  # alternate, so drift hits both alike
            for name, call in calls.items():
                latencies[name] += await sequential(call, args.count)
            for name, call in calls.items():
                rates[name].append(await per_second(call, args.count, INFLIGHT))
        rows = {
            name: {
                **summary(latencies[name], scale=1000, suffix="_ms"),
                f"per_second_{INFLIGHT}_inflight": sorted(rates[name])[len(rates[name]) // 2],
            }
            for name in calls
        }
        tail, direct = rows["tailnet"], rows["direct"]
        return {
            "rows": rows,
            "tailnet_over_direct": {
                "p50": tail["p50_ms"] / direct["p50_ms"],
                "p99": tail["p99_ms"] / direct["p99_ms"],
                "throughput": tail[f"per_second_{INFLIGHT}_inflight"]
                / direct[f"per_second_{INFLIGHT}_inflight"],
            },
        }
    finally:
        for transport, _ in transports.values():
            await transport.close()
        await recipients.close()


def main() -> int:
    from common import meshserver  # here: the children re-import this module

    parser = cli.BenchParser(__doc__)
    parser.size("--count", quick=300, full=3000, help="messages per row and round")
    parser.size("--rounds", quick=1, full=3, help="rounds, alternating the rows")
    parser.add_argument("--pods", action="store_true", help="pod to pod on the local node")
    args = parser.parse()
    if args.pods:
        return pods(args)
    started, busy0, own0 = time.monotonic(), machine_busy_seconds(), own_seconds()
    mesh_port, bare_port, agent_port = listen_ports(3)
    mesh = Mesh(local_url(mesh_port), NAMESPACE, CREDENTIAL)
    workdir = Path(tempfile.mkdtemp(prefix="tailnet-bench-"))
    with (
        Child("mesh API", meshserver.serve, mesh_port, bare_port, 2, exit_on_stop=True),
        Child("agent", serve_agents, mesh, [RECEIVER], [agent_port], None),
        LocalTailnet(ensure_tailnet_binaries(), workdir, trace=False) as tailnet,
    ):
        serving = tailnet.join("bench-agent")
        serving.serve_config(serve_config(serving.fqdn, serving.ips, agent_port))
        caller = tailnet.join("bench-caller", http_proxy=True)
        assert caller.http_proxy is not None
        figures = asyncio.run(
            measure(
                mesh,
                local_url(agent_port),
                f"http://{serving.fqdn}:{agent_port}",
                caller.http_proxy,
                tailnet.domain,
                args,
            )
        )
    others = others_share(
        machine_busy_seconds() - busy0, own_seconds() - own0, time.monotonic() - started
    )
    ms = [Column(t, 8, ".2f", k) for t, k in (("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"))]
    rate = Column("msg/s@16", 10, ",.0f", f"per_second_{INFLIGHT}_inflight")
    rows = [{"what": name, **row} for name, row in figures["rows"].items()]
    print(table([label(10, "", "what"), *ms, rate], rows, "request/response, one Agent"))
    ratio = figures["tailnet_over_direct"]
    print(
        f"tailnet / direct: p50 x{ratio['p50']:.1f}, p99 x{ratio['p99']:.1f}, "
        f"throughput x{ratio['throughput']:.2f}; other processes used {others:.0%} of the CPU"
    )
    write_result(
        "tailnet",
        {
            "quick": args.quick,
            "sizes": {"count": args.count, "rounds": args.rounds, "inflight": INFLIGHT},
            "other_processes_cpu_share": others,
            **figures,
        },
    )
    return 0


def pods(args: Any) -> int:
    from tailnet_pods import ROWS, measure_pods

    started, busy0, own0 = time.monotonic(), machine_busy_seconds(), own_seconds()
    measured = measure_pods(args.count, args.rounds, min(args.count, 100), print)
    others = others_share(
        machine_busy_seconds() - busy0, own_seconds() - own0, time.monotonic() - started
    )
    rows = {
        name: {**summary(measured["latencies"][name], scale=1000, suffix="_ms"), "count": n}
        for name in ROWS
        if (n := len(measured["latencies"][name]))
    }
    ms = [Column(t, 8, ".2f", k) for t, k in (("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"))]
    shown = [{"what": name, **row} for name, row in rows.items()]
    print(table([label(20, "", "what"), *ms], shown, "request/response pod to pod, one POST"))
    ratios = {
        mode: {
            q: rows[f"tailnet, {mode}"][f"{q}_ms"] / rows[f"direct, {mode}"][f"{q}_ms"]
            for q in ("p50", "p99")
        }
        for mode in ("kept alive", "new conn")
    }
    for mode, ratio in ratios.items():
        print(f"tailnet / direct, {mode}: p50 x{ratio['p50']:.1f}, p99 x{ratio['p99']:.1f}")
    print(f"other processes used {others:.0%} of the CPU; {measured['timings']}")
    write_result(
        "tailnet-pods",
        {
            "quick": args.quick,
            "sizes": {"count": args.count, "rounds": args.rounds},
            "sidecar_image": measured["image"],
            "other_processes_cpu_share": others,
            "timings": measured["timings"],
            "rows": rows,
            "tailnet_over_direct": ratios,
        },
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
