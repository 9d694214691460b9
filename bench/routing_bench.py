"""Routing decisions per strategy at fleet sizes, and the pending-task queue: time per
decision (p50 / p99), the price of load accounting, why-none analysis when nothing fits,
queue push + pop against a plain heapq baseline, and memory per queued task.

    .venv/bin/python bench/routing_bench.py [--quick]

Prints a table and writes bench/results/routing.json. Asserts nothing.
"""

from __future__ import annotations

import gc
import heapq
import random
import sys
import time
import tracemalloc
import uuid
from itertools import count
from typing import Any

from agent_mesh.domain.agents import AgentRecord
from agent_mesh.domain.health import HealthStatus
from agent_mesh.domain.routing import BuiltinStrategy, Router, TaskDemand
from agent_mesh.domain.task_queue import Priority, TaskQueue
from common import cli
from common.output import Column, fleet_label, table, write_result
from common.stats import percentile, summary

NAMESPACE = "bench"

# A few capabilities, some common and some rare; an agent holds one to four of them.
CAPABILITIES = ["summarize", "review", "translate", "code", "search", "vision"]
POPULARITY = [10, 6, 4, 4, 3, 1]
TYPES = ["worker"] * 16 + ["critic"] * 2 + ["orchestrator", "integrator"]
HEALTH = [HealthStatus.HEALTHY] * 85 + (
    [HealthStatus.DEGRADED] * 8 + [HealthStatus.UNREACHABLE] * 4 + [HealthStatus.PENDING] * 3
)
TASKS = [
    TaskDemand(NAMESPACE, "summarize", frozenset({"summarize"})),
    TaskDemand(NAMESPACE, "review", frozenset({"review", "summarize"})),
    TaskDemand(NAMESPACE, "code", frozenset({"code"})),
    TaskDemand(NAMESPACE, "lookup", frozenset({"translate", "search"})),
    TaskDemand(NAMESPACE, "vision", frozenset({"vision"})),
    TaskDemand(NAMESPACE, "anything"),
    TaskDemand(NAMESPACE, "critique", frozenset({"review"}), agent_type="critic"),
    TaskDemand(NAMESPACE, "team", frozenset({"summarize"}), labels={"team": "a"}),
]


def record(i: int, rng: random.Random) -> AgentRecord:
    holds = sorted(set(rng.choices(CAPABILITIES, POPULARITY, k=rng.randint(1, 4))))
    return AgentRecord(
        NAMESPACE,
        f"agent-{i}",
        f"uid-{i}",
        f"agent-{i}",
        rng.choice(TYPES),
        tuple(holds),
        None,
        None,
        False,
        max_concurrent_tasks=rng.choice([4, 10, 10, 10, 20]),
        health=rng.choice(HEALTH),
        labels={"team": rng.choice("abc")},
    )


def fleet(agents: int, seed: int = 1, warm: bool = True) -> tuple[Router, list[AgentRecord]]:
    """A router over a mixed fleet: about 15% not healthy, loads spread from idle to full;
    `warm`: the pools of the task shapes exist, as they do once tasks have been routed."""
    rng = random.Random(seed)
    router = Router(rng=random.Random(seed))
    records = [record(i, rng) for i in range(agents)]
    for r in records:
        router.upsert(r)
        router.observe_load(NAMESPACE, r.agent_id, min(r.max_concurrent_tasks, rng.randint(0, 12)))
    if warm:
        for task in TASKS:
            router.route(task)
    return router, records


def first_decisions(agents: int) -> dict[str, Any]:
    """The first task of each shape builds that shape's pool (once per shape)."""
    timings = []
    for seed in range(3):
        router, _ = fleet(agents, seed, warm=False)
        for task in TASKS:
            start = time.perf_counter_ns()
            router.route(task)
            timings.append(time.perf_counter_ns() - start)
    return {
        "agents": agents,
        "median_us": percentile(timings, 0.5) / 1000,
        "max_us": max(timings) / 1000,
    }


def router_memory(agents: int) -> dict[str, Any]:
    """The router's bytes per agent, with the pools of the eight task shapes built."""
    rng = random.Random(1)
    records = [record(i, rng) for i in range(agents)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    router = Router()
    for r in records:
        router.upsert(r)
    for task in TASKS:
        router.route(task)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return {"agents": agents, "bytes_per_agent": used / agents}


def decisions(agents: int, strategy: str, count_: int) -> dict[str, Any]:
    """Time route() alone; between decisions the chosen agent is assigned and a random
    agent released, so the load keeps moving as under traffic."""
    router, records = fleet(agents)
    rng = random.Random(7)
    tasks = [
        TaskDemand(
            t.namespace,
            t.task_type,
            t.required_capabilities,
            t.agent_type,
            t.labels,
            strategy=strategy,
        )
        for t in TASKS
    ]
    timings = []
    routed = 0
    gc.collect()
    for n in range(count_):
        task = tasks[n % len(tasks)]
        start = time.perf_counter_ns()
        decision = router.route(task)
        timings.append(time.perf_counter_ns() - start)
        if decision.agent_id is not None:
            routed += 1
            router.assign(NAMESPACE, decision.agent_id)
        router.release(NAMESPACE, rng.choice(records).agent_id)
    return {"agents": agents, "strategy": strategy, **_percentiles(timings)} | {
        "routed_share": routed / count_
    }


def accounting(agents: int, count_: int) -> dict[str, Any]:
    """assign + release of one agent: the index upkeep on every dispatch and completion."""
    router, records = fleet(agents)
    ids = [r.agent_id for r in records]
    rng = random.Random(3)
    timings = []
    for _ in range(count_):
        agent_id = rng.choice(ids)
        start = time.perf_counter_ns()
        router.assign(NAMESPACE, agent_id)
        router.release(NAMESPACE, agent_id)
        timings.append(time.perf_counter_ns() - start)
    return {"agents": agents, **_percentiles(timings)}


def why_none(agents: int, count_: int) -> list[dict[str, Any]]:
    """Decisions that find nothing and say why: every 'vision' agent full (the common case
    under load), and a label selector no 'summarize' agent matches (a misconfiguration:
    the analysis then visits every capable agent)."""
    router, records = fleet(agents)
    for r in records:
        if "vision" in r.capabilities:
            router.observe_load(NAMESPACE, r.agent_id, r.max_concurrent_tasks)
    rows = []
    for task in (
        TaskDemand(NAMESPACE, "vision", frozenset({"vision"})),
        TaskDemand(NAMESPACE, "summarize", frozenset({"summarize"}), labels={"team": "z"}),
    ):
        timings = []
        reason = None
        for _ in range(count_):
            start = time.perf_counter_ns()
            reason = router.route(task).reason
            timings.append(time.perf_counter_ns() - start)
        rows.append({"agents": agents, "reason": str(reason), **_percentiles(timings)})
    return rows


def _percentiles(timings_ns: list[int]) -> dict[str, float]:
    return {**summary(timings_ns, scale=1 / 1000, suffix="_us"), "decisions": len(timings_ns)}


def queue_speed(items: int) -> dict[str, Any]:
    """Push every item, then pop them all: TaskQueue against heapq with the same lazy
    deletion (a dict of live entries), in ns per push + pop."""
    rng = random.Random(1)
    keys = [f"task-{i:07d}" for i in range(items)]
    priorities = [rng.choice(list(Priority)) for _ in range(items)]

    queue: TaskQueue[None] = TaskQueue()
    start = time.perf_counter_ns()
    for key, priority in zip(keys, priorities, strict=True):
        queue.push(key, None, priority)
    while queue.pop() is not None:
        pass
    deques_ns = (time.perf_counter_ns() - start) / items

    rank = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.MEDIUM: 2, Priority.LOW: 3}
    heap: list[tuple[int, int, str, None]] = []
    live: dict[str, tuple[int, int, str, None]] = {}
    seq = count()
    start = time.perf_counter_ns()
    for key, priority in zip(keys, priorities, strict=True):
        entry = (rank[priority], next(seq), key, None)
        live[key] = entry
        heapq.heappush(heap, entry)
    while heap:
        entry = heapq.heappop(heap)
        if live.get(entry[2]) is entry:
            del live[entry[2]]
    heap_ns = (time.perf_counter_ns() - start) / items
    return {"items": items, "task_queue_ns_per_push_pop": deques_ns, "heapq_ns": heap_ns}


def queue_memory(items: int) -> dict[str, Any]:
    """Bytes the queue adds per pending task (its key and item exist anyway: the task's
    uid in the watch cache, its TaskDemand), and with the TaskDemand counted."""
    rng = random.Random(1)
    keys = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(items)]
    shapes = TASKS
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    demands = [  # each with its own sets and maps, as when read from its MeshTask
        TaskDemand(
            NAMESPACE,
            s.task_type,
            frozenset(list(s.required_capabilities)),
            s.agent_type,
            dict(s.labels),
        )
        for s in (shapes[i % len(shapes)] for i in range(items))
    ]
    with_demands = tracemalloc.get_traced_memory()[0]
    queue: TaskQueue[TaskDemand] = TaskQueue()
    for i, (key, demand) in enumerate(zip(keys, demands, strict=True)):
        queue.push(key, demand, list(Priority)[i % 4])
    gc.collect()
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "items": items,
        "queue_bytes_per_task": (used - with_demands) / items,
        "task_demand_bytes": (with_demands - base) / items,
        "uid_bytes": sys.getsizeof(keys[0]),
    }


def main() -> int:
    parser = cli.BenchParser(__doc__)
    args = parser.parse()
    sizes = cli.quick_or_full(args, [100, 1000], [100, 1000, 10_000])
    per = cli.quick_or_full(args, 2000, 20_000)
    items = cli.quick_or_full(args, 10_000, 100_000)

    rows = [decisions(n, s, per) for n in sizes for s in BuiltinStrategy]
    upkeep = [accounting(n, per) for n in sizes]
    nothing = [row for n in sizes for row in why_none(n, per // 10)]
    builds = [first_decisions(n) for n in sizes]
    router_bytes = [router_memory(n) for n in sizes]
    speed = queue_speed(items)
    memory = queue_memory(items)

    p50, p99 = Column("p50 µs", 8, ".1f", "p50_us"), Column("p99 µs", 8, ".1f", "p99_us")
    routed = Column("routed", 7, ".0%", "routed_share")
    tables = [
        (
            [fleet_label("routing decision (route() only)", "strategy"), p50, p99, routed],
            rows,
        ),
        ([fleet_label("assign + release"), p50, p99], upkeep),
        ([fleet_label("no candidate, with its reason", "reason"), p50, p99], nothing),
        (
            [
                fleet_label("first task of a shape (pool built)"),
                Column("median µs", 9, ".0f", "median_us"),
                Column("max µs", 8, ".0f", "max_us"),
            ],
            builds,
        ),
        (
            [
                fleet_label("router memory (8 shapes in use)"),
                Column("bytes/agent", 12, ",.0f", "bytes_per_agent"),
            ],
            router_bytes,
        ),
    ]
    print("\n\n".join(table(columns, figures) for columns, figures in tables))
    print(f"\nqueue push + pop at {speed['items']:,} tasks (ns per task)")
    print(f"  TaskQueue (deque per priority) {speed['task_queue_ns_per_push_pop']:>8.0f}")
    print(f"  heapq baseline                 {speed['heapq_ns']:>8.0f}")
    print(f"\nmemory per pending task at {memory['items']:,} tasks (bytes)")
    print(f"  queue entry and index          {memory['queue_bytes_per_task']:>8.0f}")
    print(f"  TaskDemand (its item)          {memory['task_demand_bytes']:>8.0f}")

    write_result(
        "routing",
        {
            "quick": args.quick,
            "decisions": rows,
            "accounting": upkeep,
            "no_candidate": nothing,
            "first_decision_of_a_shape": builds,
            "router_memory": router_bytes,
            "queue_speed": speed,
            "queue_memory": memory,
        },
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
