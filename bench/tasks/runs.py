"""One run of the tasks bench: create tasks, watch them reach a phase, and the figures
of it (latencies on one clock, stages from the operator's audit log, CPU per process,
the operator's counters); and the apiserver's cost per request."""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any, cast

from common.children import SPAWN, Child, receive
from common.procfs import machine_busy_seconds, others_share, wait_idle
from common.stats import summary

from .apiserver import ApiServer
from .clients import FINAL, Creation, Seen, creator, sender, watcher
from .processes import Fleet, scrape


@dataclass(frozen=True)
class Bench:
    """What every scenario of the tasks bench is given: the command line and the
    temporary directory (logs, plane data)."""

    args: argparse.Namespace
    work: Path


def echo_spec() -> dict[str, Any]:
    return {"taskType": "echo", "requiredCapabilities": ["echo"]}


def run(
    api: ApiServer,
    fleet: Fleet,
    namespace: str,
    prefix: str,
    count: int,
    *,
    spec: dict[str, Any],
    concurrency: int,
    rate: float | None = None,
    done_phases: frozenset[str] = FINAL,
    timeout: float = 600,
    linger: float = 2.0,
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Create `count` tasks, watch them reach `done_phases`; figures of the run."""
    expected = cast("Synchronized[int]", SPAWN.Value("i", count))
    watch_rx, watch_tx = SPAWN.Pipe(duplex=False)
    create_rx, create_tx = SPAWN.Pipe(duplex=False)
    watching = Child(
        "the watcher",
        watcher,
        api,
        namespace,
        prefix,
        expected,
        done_phases,
        timeout,
        linger,
        watch_tx,
        grace=1.0,
    )
    creation = Creation(namespace, prefix, count, concurrency, rate, spec)
    creating = Child("the creator", creator, api, creation, create_tx, grace=1.0)
    log = fleet.operator.log if fleet.operator is not None else None
    try:
        watching.start(timeout=60)
        if on_start is not None:
            on_start()
        metrics0 = scrape(fleet.operator) if fleet.operator is not None else {}
        offset = log.stat().st_size if log is not None else 0
        cpu0, wall0, busy0 = fleet.cpu(), time.monotonic(), machine_busy_seconds()
        creating.start(wait=False)
        created: dict[str, Any] = receive(create_rx, creating, timeout)
        if created["failed"]:
            with expected.get_lock():
                expected.value = count - len(created["failed"])
        watched: dict[str, Any] = receive(watch_rx, watching, timeout + linger + 30)
        # the work a run causes may outlast its last completion (the operator catching up
        # with its watch): CPU and counters are read once the operator is idle again
        idle = wait_idle(fleet.operator.pid, quiet=0) if fleet.operator is not None else 0.0
        cpu1, wall1, busy1 = fleet.cpu(), time.monotonic(), machine_busy_seconds()
        metrics1 = scrape(fleet.operator) if fleet.operator is not None else {}
        lines, audit = operator_log(log, offset, prefix)
    finally:
        creating.stop()
        watching.stop()
    return summarize(
        count,
        created,
        watched,
        {k: cpu1[k] - cpu0[k] for k in cpu1},
        wall1 - wall0,
        busy1 - busy0,
        {k: v - metrics0.get(k, 0.0) for k, v in metrics1.items() if v != metrics0.get(k, 0.0)},
        lines,
        audit,
        idle,
        prefix,
        rate,
        concurrency,
    )


def summarize(
    count: int,
    created: dict[str, Any],
    watched: dict[str, Any],
    cpu: dict[str, float],
    window: float,
    machine_busy: float,
    metrics: dict[str, float],
    log_lines_added: int,
    audit: dict[str, dict[str, float]],
    idle: float,
    prefix: str,
    rate: float | None,
    concurrency: int,
) -> dict[str, Any]:
    sent, acked = created["sent"], created["acked"]
    seen = {k: Seen(**v) for k, v in watched["seen"].items()}
    first = min(sent)
    latencies, to_watch, phases = [], [], collections.Counter[str]()
    last_done = first
    writes: collections.Counter[int] = collections.Counter()
    paths: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    trails: collections.Counter[str] = collections.Counter()
    intake: list[float] = []
    agent: list[float] = []
    write: list[float] = []
    for i in range(count):
        name = f"{prefix}{i:06d}"
        task = seen.get(name)
        stamps = audit.get(name, {})
        if task is not None and "assigned" in stamps and "completed" in stamps:
            intake.append(stamps["assigned"] - task.added_wall)
            agent.append(stamps["completed"] - stamps["assigned"])
            if task.done_wall is not None:
                write.append(task.done_wall - stamps["completed"])
        if task is None:
            phases["never seen"] += 1
            continue
        phases[str(task.phase)] += 1
        writes[task.modified] += 1
        paths[" → ".join(task.path)] += 1
        reasons[str(task.reason)] += 1
        trails[" ".join(task.trail)] += 1
        to_watch.append(task.added - sent[i])
        if task.done is not None:
            latencies.append(task.done - sent[i])
            last_done = max(last_done, task.done)
    done = len(latencies)
    create_calls = [a - s for s, a in zip(sent, acked, strict=True)]
    cpu["creator"] = created["cpu_s"]
    cpu["watcher"] = watched["cpu_s"]
    return {
        "tasks": count,
        "offered_rate_per_s": rate,
        "creators_in_flight": concurrency,
        "create_errors": created["errors"],
        "create_failed": len(created["failed"]),
        "create_rate_per_s": count / max(1e-9, max(acked) - first),
        **summary(create_calls, scale=1000, prefix="create_call_", suffix="_ms", empty=0.0),
        **summary(to_watch, scale=1000, prefix="create_to_watch_added_", suffix="_ms", empty=0.0),
        # where the time goes (wall clock; the operator's audit log has ms resolution):
        # watch shows ADDED -> operator assigns -> agent's result in -> watch shows done
        "stages_ms": {
            stage: summary(values, (0.5, 0.9, 0.99), scale=1000)
            for stage, values in (
                ("added_to_assigned", intake),
                ("assigned_to_result", agent),
                ("result_to_status_seen", write),
            )
            if values
        },
        "operator_idle_after_s": idle,
        "done": done,
        "final_phases": dict(phases),
        "throughput_per_s": done / max(1e-9, last_done - first),
        **summary(latencies, (0.5, 0.9, 0.99), prefix="latency_", suffix="_s", empty=0.0),
        "latency_max_s": max(latencies, default=0.0),
        "status_writes_per_task_mean": sum(k * v for k, v in writes.items()) / max(1, count),
        "status_writes_per_task": {str(k): v for k, v in sorted(writes.items())},
        "phase_paths_seen": dict(paths.most_common(6)),
        "assigned_reasons": dict(reasons),
        "event_trails": dict(trails.most_common(8)),
        "window_s": window,
        "cpu_s": cpu,
        "cpu_ms_per_task": {k: v * 1000 / max(1, count) for k, v in cpu.items()},
        # ours: all the CPU the run caused, per second from the first create to the last
        # completion; others: the rest of the machine's busy time over the whole window
        "cpu_share_of_machine": sum(cpu.values())
        / (max(1e-9, last_done - first) * (os.cpu_count() or 1)),
        "others_cpu_share_of_machine": others_share(machine_busy, sum(cpu.values()), window),
        "operator_metrics_delta": metrics,
        # from the operator's counters: above 1.0, some tasks were dispatched or completed twice
        "dispatches_per_task": sum(
            v for k, v in metrics.items() if k.startswith("agentmesh_transport_requests_total")
        )
        / max(1, count),
        "completions_counted_per_task": metrics.get("agentmesh_tasks_completed_total", 0.0)
        / max(1, count),
        "operator_log_lines_per_task": log_lines_added / max(1, count),
    }


def operator_log(
    path: Path | None, offset: int, prefix: str
) -> tuple[int, dict[str, dict[str, float]]]:
    """Lines the operator logged since `offset`, and from its audit records the wall-clock
    time each task `prefix`* was first assigned and first completed."""
    if path is None:
        return 0, {}
    with path.open("rb") as f:
        f.seek(offset)
        lines = f.read().splitlines()
    times: dict[str, dict[str, float]] = {}
    for line in lines:
        if b"agent_mesh.audit" not in line:
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            task = str(record.get("task") or "")
            kind = {"task.assigned": "assigned", "task.completed": "completed"}.get(
                str(record.get("event"))
            )
            if kind and task.startswith(prefix):
                ts = dt.datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00"))
                times.setdefault(task, {}).setdefault(kind, ts.timestamp())
    return len(lines), times


def apiserver_cost(
    api: ApiServer, fleet: Fleet, requests: list[tuple[str, str, str]], concurrency: int
) -> dict[str, Any]:
    """Requests per second and the apiserver's and etcd's CPU per request."""
    rx, tx = SPAWN.Pipe(duplex=False)
    sending = Child("the request sender", sender, api, requests, concurrency, tx, grace=10.0)
    cpu0 = fleet.cpu()
    sending.start(wait=False)
    try:
        got = receive(rx, sending, 600)
    finally:
        sending.stop()
    cpu1 = fleet.cpu()
    n = max(1, len(requests))
    return {
        "requests": len(requests),
        "per_second": n / max(1e-9, got["seconds"]),
        **summary(got["latencies"], scale=1000, suffix="_ms", empty=0.0),
        "apiserver_cpu_ms": (cpu1["kube-apiserver"] - cpu0["kube-apiserver"]) * 1000 / n,
        "etcd_cpu_ms": (cpu1["etcd"] - cpu0["etcd"]) * 1000 / n,
        "errors": got["errors"],
    }
