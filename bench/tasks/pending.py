"""Pending memory: a fresh operator on a namespace without agents; tasks requiring a
capability nobody has, in two halves, each until the watch shows every task Pending and
the operator is idle again; RSS growth per task; then the same with a traced operator,
and estimates in this process (memory.py)."""

from __future__ import annotations

import collections
import json
from typing import Any

from agent_mesh.devcluster import ControlPlane
from common.procfs import memory_kib, wait_idle

from .apiserver import GROUP, PLURAL, VERSION, ApiServer, create_namespace, events_by_reason
from .memory import attribute, coordinator_bytes_per_task, kopf_bytes_per_object, snapshot
from .operator_shim import TRACE_DIR
from .processes import Fleet, start_operator
from .runs import Bench, run

NOBODY = "capability-nobody-has"


def pending_memory(
    bench: Bench, api: ApiServer, plane: ControlPlane, fleet: Fleet
) -> dict[str, Any]:
    """A fresh operator on a namespace with no agent; `pending` tasks nobody can take, in
    two halves (the second half's growth leaves out what the first paid once: the peak of
    kopf's per-object workers, pools, caches)."""
    args = bench.args
    namespace = create_namespace(api, "bench-pending")
    system = create_namespace(api, "bench-system")
    log = bench.work / "operator-pending.log"
    op = start_operator(api, plane.kubeconfig, namespace, system, log, args.webhooks)
    fleet.operator = op
    wait_idle(op.pid)  # start-up allocations settle
    before = memory_kib(op.pid)
    half = args.pending // 2
    first = pend(bench, api, fleet, namespace, "pending-a-", half)
    middle = memory_kib(op.pid)
    second = pend(bench, api, fleet, namespace, "pending-b-", args.pending - half)
    after = memory_kib(op.pid)
    template = api.request(
        "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/pending-a-000001"
    )
    events = events_by_reason(api, namespace)
    fleet.stop()
    traced = traced_pending(bench, api, plane, fleet, system, min(args.pending, 2000))
    sample = min(args.pending, 5000)
    coord = coordinator_bytes_per_task(template, sample)
    kopf_bytes = kopf_bytes_per_object(template, sample)
    reasons = collections.Counter(first["assigned_reasons"])
    reasons.update(second["assigned_reasons"])

    def growth(a: dict[str, int], b: dict[str, int], key: str, tasks: int) -> float:
        return (b.get(key, 0) - a.get(key, 0)) * 1024 / max(1, tasks)

    return {
        "namespace": namespace,
        "tasks": args.pending,
        "create_rate_per_s": first["create_rate_per_s"],
        "all_seen_after_s": [first["latency_max_s"], second["latency_max_s"]],
        "status_writes_per_task_mean": first["status_writes_per_task_mean"],
        "assigned_reasons": dict(reasons),
        "final_phases": first["final_phases"],
        "operator_cpu_ms_per_task": first["cpu_ms_per_task"].get("operator"),
        "rss_kib": {"before": before, "after_first_half": middle, "after_all": after},
        "rss_bytes_per_task": growth(before, after, "VmRSS", args.pending),
        "rss_bytes_per_task_second_half": growth(middle, after, "VmRSS", args.pending - half),
        "anon_bytes_per_task": growth(before, after, "RssAnon", args.pending),
        "traced_operator": traced,
        "estimated_bytes_per_task": {
            "coordinator (Coordinator.observe() here, tracemalloc)": coord,
            "kopf ResourceMemory (here, tracemalloc)": kopf_bytes,
        },
        "events_by_reason": events,
        "task_object_bytes_json": len(json.dumps(template)),
    }


def pend(
    bench: Bench, api: ApiServer, fleet: Fleet, namespace: str, prefix: str, count: int
) -> dict[str, Any]:
    """`count` tasks no agent can take, until the watch shows each Pending, then 8 s more
    (kopf's per-object workers exit after 5 s idle)."""
    figures = run(
        api,
        fleet,
        namespace,
        prefix,
        count,
        spec={"taskType": "echo", "requiredCapabilities": [NOBODY]},
        concurrency=bench.args.creators,
        done_phases=frozenset({"Pending"}),
        timeout=bench.args.timeout,
        linger=3.0,
    )
    assert fleet.operator is not None
    figures["operator_idle_after_s"] = wait_idle(fleet.operator.pid)
    return figures


def traced_pending(
    bench: Bench, api: ApiServer, plane: ControlPlane, fleet: Fleet, system: str, count: int
) -> dict[str, Any]:
    """The same with an operator that traces its allocations (tracemalloc, 12 frames):
    what the Python heap keeps per pending task, and which code allocated it."""
    namespace = create_namespace(api, "bench-traced")
    traces = bench.work / "traces"
    traces.mkdir()
    log = bench.work / "operator-traced.log"
    op = start_operator(
        api,
        plane.kubeconfig,
        namespace,
        system,
        log,
        bench.args.webhooks,
        shim={TRACE_DIR: str(traces)},
    )
    fleet.operator = op
    wait_idle(op.pid)
    before = snapshot(op, traces, 0)
    rss0 = memory_kib(op.pid)
    pend(bench, api, fleet, namespace, "traced-", count)
    after = snapshot(op, traces, 1)
    rss1 = memory_kib(op.pid)
    fleet.stop()
    out = attribute(before, after, count)
    out["tasks"] = count
    out["rss_bytes_per_task_while_traced"] = (
        (rss1.get("VmRSS", 0) - rss0.get("VmRSS", 0)) * 1024 / count
    )
    return out
