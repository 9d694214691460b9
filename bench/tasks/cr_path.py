"""The CR path: one operator, echo_worker agents registered as external MeshAgents; a
warm-up, the burst, a paced run and (--profile) a burst under py-spy; with --experiment
the same again with an operator whose Kubernetes client has trust_env=False."""

from __future__ import annotations

from typing import Any

from agent_mesh.devcluster import ControlPlane
from common.harness import wait_until
from common.procfs import memory_kib

from .apiserver import GROUP, VERSION, ApiServer, create_namespace, delete_tasks, events_by_reason
from .operator_shim import NO_TRUST_ENV
from .processes import Fleet, register_agent, start_agent, start_operator
from .pyspy import profiled_burst
from .runs import Bench, echo_spec, run


def cr_path(bench: Bench, api: ApiServer, plane: ControlPlane, fleet: Fleet) -> dict[str, Any]:
    args = bench.args
    namespace = create_namespace(api, "bench-tasks")
    system = create_namespace(api, "bench-system")
    op = start_operator(
        api, plane.kubeconfig, namespace, system, bench.work / "operator.log", args.webhooks
    )
    fleet.operator = op
    registered = [
        (f"echo-{i}", *register_agent(api, namespace, f"echo-{i}", args.slots))
        for i in range(args.agents)
    ]

    def start_agents() -> None:
        for name, url, credential in registered:
            agent = start_agent(op, namespace, name, url, credential, args.slots, bench.work)
            fleet.agents.append(agent)

    start_agents()

    def healthy() -> bool:
        for agent in fleet.agents:
            if agent.exited():
                raise RuntimeError(f"agent {agent.name} exited:\n{agent.tail()}")
        got = api.request("GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/meshagents")
        states = [(i.get("status") or {}).get("healthStatus") for i in got["items"]]
        return len(states) == args.agents and all(s == "healthy" for s in states)

    wait_until("the agents to be healthy", healthy, 90)
    figures = measure(bench, api, fleet, namespace, "")
    events = events_by_reason(api, namespace)
    tasks_run = sum(r["tasks"] for r in figures.values() if r and "tasks" in r)
    out: dict[str, Any] = {
        "namespace": namespace,
        "agents": args.agents,
        "slots_per_agent": args.slots,
        "webhooks": args.webhooks,
        **figures,
        "events_by_reason": events,
        "events_per_task": {k: v / tasks_run for k, v in events.items()},
        "operator_log_bytes": op.log.stat().st_size if op.log.exists() else None,
    }
    if args.experiment:
        # The same agents and namespace, a new operator whose Kubernetes client does not
        # consult proxy variables and ~/.netrc on every call (operator_shim.py).
        fleet.stop()
        delete_tasks(api, namespace)  # the new operator need not list the finished ones
        log = bench.work / "operator-experiment.log"
        op = start_operator(
            api, plane.kubeconfig, namespace, system, log, args.webhooks, shim={NO_TRUST_ENV: "1"}
        )
        fleet.operator = op
        start_agents()  # beating to the new operator's mesh API
        paced = figures.get("paced")
        rate = paced["offered_rate_per_s"] if paced else None
        out["experiment_no_trust_env"] = measure(bench, api, fleet, namespace, "x", rate)
    fleet.stop()
    return out


def measure(
    bench: Bench,
    api: ApiServer,
    fleet: Fleet,
    namespace: str,
    prefix: str,
    paced_rate: float | None = None,
) -> dict[str, Any]:
    """A warm-up, the burst, a paced run (at `paced_rate`, else a fraction of the burst's
    throughput) and, with --profile, a burst under py-spy."""
    args = bench.args
    op = fleet.operator
    assert op is not None
    warm = run(
        api, fleet, namespace, f"{prefix}warm-", 40, spec=echo_spec(), concurrency=8, timeout=120
    )
    if warm["final_phases"].get("Completed") != 40:
        raise RuntimeError(f"warm-up tasks did not complete: {warm['final_phases']}")
    rss0 = memory_kib(op.pid)
    burst = run(
        api,
        fleet,
        namespace,
        f"{prefix}burst-",
        args.tasks,
        spec=echo_spec(),
        concurrency=args.creators,
        timeout=args.timeout,
    )
    rss1 = memory_kib(op.pid)
    burst["operator_rss_kib_before_after"] = [rss0.get("VmRSS"), rss1.get("VmRSS")]
    burst["operator_rss_growth_per_completed_task_bytes"] = (
        (rss1.get("VmRSS", 0) - rss0.get("VmRSS", 0)) * 1024 / max(1, args.tasks)
    )
    paced = None
    if args.paced > 0:
        rate = paced_rate or max(5.0, round(burst["throughput_per_s"] * args.paced))
        paced = run(
            api,
            fleet,
            namespace,
            f"{prefix}paced-",
            int(min(args.tasks, rate * args.paced_seconds)),
            spec=echo_spec(),
            concurrency=args.creators,
            rate=rate,
            timeout=args.timeout,
        )
    profile = profiled_burst(bench, api, fleet, namespace, prefix) if args.profile else None
    return {
        "warmup": {k: warm[k] for k in ("tasks", "done", "throughput_per_s", "latency_p50_s")},
        "burst": burst,
        "paced": paced,
        "profile": profile,
    }
