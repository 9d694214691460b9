"""Agent-to-agent transport on loopback: our Transport calling SDK Agents that verify a
real mesh token (ES256, against the operator's JWKS) and the ACL on every message, next to
raw aiohttp doing the same exchange without the mesh, measured in the same run.

    .venv/bin/python bench/transport_bench.py [--quick] [--only rr,broadcast,connections]
                                              [--profile]

1. request/response: Transport.request() to an Agent in another process, sequential p50 /
   p99 and messages per second at 16 and 64 in flight, with CPU per message on each side;
   baseline: an aiohttp client and a bare aiohttp server (own process) that json-decodes
   the envelope and answers a reply of the same size.
2. broadcast: Transport.broadcast() of an event to 100 Agents (hosted by a few processes,
   many Agents each on its own port), time until every outcome is in; baseline: one
   aiohttp session's asyncio.gather to 100 bare aiohttp sites in as many processes.
3. connections: one Agent process holding N idle keep-alive connections from client
   processes (each on its own 127.0.0.x source address), its RSS per connection, whether
   every held connection still answers and how fast /healthz is at N; N grows until
   something refuses (RLIMIT_NOFILE is raised to its hard limit, never beyond).

Identity comes from the real mesh API (bench/meshserver.py: the operator's app on an
Authority with in-memory stores); callers and agents exchange a credential for their
tokens as agents outside a cluster do. Prints tables and writes bench/results/transport.json
(with --profile also cProfile dumps of both ends, transport_profile_*.prof). Asserts
nothing; the processes it starts are stopped on exit, on failure and on SIGTERM.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from agent_mesh.transport.client import TransportConfig
from common import cli
from common.children import Child
from common.harness import CREDENTIAL, NAMESPACE, Mesh, listen_ports, local_url
from common.output import write_result
from common.procfs import machine_busy_seconds, others_share, own_seconds
from transport import broadcast, connections, one_loop, profile_diff, request_response, step_costs

SCENARIOS = ("rr", "broadcast", "connections")


@dataclass(frozen=True)
class Sizes:
    """How much of everything: full sizes (~4 min), or --quick (a smoke run, ~30 s)."""

    rr: request_response.Sizes
    step_seconds: float
    split_count: int
    split_rounds: int
    broadcasts: int
    connection_steps: list[int]
    overshoot: bool
    probes: int
    profile_messages: int

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        def pick(small: Any, full: Any) -> Any:
            return small if quick else full

        return cls(
            request_response.Sizes(
                sequential=pick(300, 2000),
                total=pick(2000, 10_000),
                fresh_total=pick(1000, 4000),
                rounds=pick(1, 3),
            ),
            step_seconds=pick(0.1, 0.5),
            split_count=pick(300, 1000),
            split_rounds=pick(3, 9),
            broadcasts=pick(10, 100),
            connection_steps=pick([500, 1000, 2000], [1000, 2500, 5000, 10_000, 15_000]),
            overshoot=not quick,
            probes=pick(50, 200),
            profile_messages=pick(2000, 6000),
        )


def main() -> int:
    # here, not at the top: the children re-import this module and need none of the mesh
    from common import meshserver

    parser = cli.BenchParser(__doc__)
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help="comma-separated subset of " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--profile", action="store_true", help="also profile both ends (rr)")
    parser.add_argument("--targets", type=int, default=100, help="broadcast targets")
    parser.add_argument(
        "--broadcast-procs", type=int, default=2, help="processes hosting the broadcast targets"
    )
    args = parser.parse()
    sizes = Sizes.of(args.quick)
    parts = set(args.only.split(","))
    if parts - set(SCENARIOS):
        parser.error(f"--only: unknown scenario {sorted(parts - set(SCENARIOS))}")
    result: dict[str, Any] = {
        "versions": {"aiohttp": aiohttp.__version__},
        "quick": args.quick,
        "transport_config": {
            "max_connections_per_agent": TransportConfig().max_connections_per_agent,
            "keepalive_seconds": TransportConfig().keepalive_seconds,
        },
    }
    started, busy0, own0 = time.monotonic(), machine_busy_seconds(), own_seconds()
    if "rr" in parts:
        result["step_costs"] = step_costs.run(sizes.step_seconds)
    mesh_port, bare_port = listen_ports(2)  # meshserver's bare endpoint is not used here
    mesh = Mesh(local_url(mesh_port), NAMESPACE, CREDENTIAL)
    mesh_api = Child(
        "mesh API", meshserver.serve, mesh_port, bare_port, args.targets + 1, exit_on_stop=True
    )
    with mesh_api:
        if "rr" in parts:
            result["request_response"] = request_response.run(mesh, sizes.rr)
            result["one_loop_split"] = one_loop.run(mesh, sizes.split_count, sizes.split_rounds)
        if "broadcast" in parts:
            result["broadcast"] = broadcast.run(
                mesh, args.targets, args.broadcast_procs, sizes.broadcasts
            )
        if "connections" in parts:
            result["connections"] = connections.run(
                mesh, sizes.connection_steps, sizes.overshoot, sizes.probes
            )
        if args.profile:
            result["profile"] = profile_diff.run(mesh, sizes.profile_messages)
    others = others_share(
        machine_busy_seconds() - busy0, own_seconds() - own0, time.monotonic() - started
    )
    result["other_processes_cpu_share"] = others
    reports: dict[str, Callable[[Any], None]] = {
        "request_response": request_response.report,
        "step_costs": step_costs.report,
        "one_loop_split": one_loop.report,
        "broadcast": broadcast.report,
        "connections": connections.report,
        "profile": profile_diff.report,
    }
    for key, report in reports.items():
        if result.get(key):
            report(result[key])
    print(
        f"other processes used {others:.0%} of the machine's CPU time during the run"
        + (": the figures are disturbed" if others > 0.05 else "")
    )
    write_result("transport", result)
    return 0


if __name__ == "__main__":
    cli.run(main)
