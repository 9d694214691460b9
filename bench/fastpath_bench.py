"""Fast-path throughput end to end on loopback: submit (POST /v1/tasks) → coordinator →
echo agent processes → result → answer, single-task requests against batched ones.

    .venv/bin/python bench/fastpath_bench.py [--quick] [--agents 2] [--profile]
        [--no-logs] [--dispatch both|per-task|batched]

The operator side is the real mesh API application with the real Coordinator, FastPath,
Router and transport, in a process of its own, with its auth state in memory (as
bench/common/meshserver.py does): in-memory fast-path tasks never touch the apiserver, so the
only thing left out is kopf's idle watch loops. It logs as the operator does (JSON lines
to stderr, here a file) unless --no-logs. The agents are examples/echo_worker.py
processes (the SDK Agent: token checks, ACL, de-duplication), each allowed 256 tasks at
once. The load generator is this process. Everything shares this machine's cores, so the
figures are for comparing rows of one run.

Rows: one task per request (64 requests in flight); batches of 100 (8 in flight) and
1,000 (4 in flight); each with the operator dispatching one call per task (its default)
and with batched dispatch (AGENT_MESH_BATCH_DISPATCH); then the agents' own ceiling,
one agent called directly without the operator (POST /v1/tasks per task, and
POST /v1/tasks/batch). "op CPU/task" is the operator process's CPU time per task (from
/proc), steadier than tasks/s on a shared machine. --profile runs the operator side
under cProfile during the batched rows and prints where its time goes.

Prints a table and writes bench/results/fastpath.json. Asserts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp

from common import cli
from common.children import SPAWN, Child
from common.harness import (
    CREDENTIAL,
    NAMESPACE,
    Mesh,
    free_port,
    local_url,
    start_echo_worker,
    wait_ready,
)
from common.load import closed_loop
from common.output import Column, label, result_path, table, write_result
from common.procfs import cpu_seconds
from common.profiling import top_functions
from common.stats import summary

ROOT = Path(__file__).resolve().parents[1]
AGENT_SLOTS = 256


def serve(
    port: int,
    agents: dict[str, str],
    options: dict[str, Any],
    ready: Event,
    stop: Event,
) -> None:
    """A children.Child target, the operator side: mesh API + Coordinator + FastPath, auth
    state in memory (common.meshserver)."""
    import logging

    from agent_mesh.auth.audit import AuditLog
    from agent_mesh.auth.authority import AuthSettings
    from agent_mesh.coordinator import Coordinator
    from agent_mesh.domain.agents import AgentRegistry
    from agent_mesh.domain.clock import SystemClock
    from agent_mesh.domain.health import HealthStatus, HealthTracker
    from agent_mesh.health.monitor import HealthMonitor
    from agent_mesh.mesh.fastpath import FastPath
    from agent_mesh.mesh.server import create_app
    from agent_mesh.observability.logging import configure_logging
    from agent_mesh.transport.batching import BatchingTransport
    from agent_mesh.transport.client import TransportConfig
    from common.harness import serve_app
    from common.meshserver import authority, record

    if options["log_file"]:
        log = os.open(options["log_file"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(log, 2)
        configure_logging("info", "json")
    else:
        logging.disable(logging.CRITICAL)
    profiler = cProfile.Profile() if options["profile"] else None

    async def main() -> None:
        clock = SystemClock()
        registry = AgentRegistry()
        healthy, slots = HealthStatus.HEALTHY, AGENT_SLOTS
        records = [
            record(a, "worker", ("echo",), endpoint=url, health=healthy, slots=slots)
            for a, url in agents.items()
        ]
        records.append(record("bench-client", "orchestrator", (), health=healthy, slots=slots))
        for r in records:
            registry.upsert(r)
        audit = AuditLog(clock=clock)
        auth = await authority(registry, clock, audit, AuthSettings())
        monitor = HealthMonitor(HealthTracker(), registry, None, None, clock)
        transport = None
        if options["batch_dispatch"]:  # as the operator builds it (runtime/services.py)
            transport = BatchingTransport(TransportConfig(max_connections_per_agent=100, retries=0))
        coordinator = Coordinator(
            registry=registry,
            tracker=monitor.tracker,
            authority=auth,
            audit=audit,
            clock=clock,
            transport=transport,
        )
        for r in records:
            coordinator.agent_seen(r)
        fast = FastPath(coordinator)
        app = create_app(auth, monitor, monitor.tracker, 8 * 1024 * 1024, fast_path=fast)
        runner = await serve_app(app, port)
        scheduler = asyncio.create_task(coordinator.run())
        ready.set()
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            await loop.run_in_executor(None, stop.wait, 0.5)
            if profiler is not None and options["profile_flag"].is_set():
                profiler.enable()
                options["profile_flag"].clear()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(options["profile_out"])
        scheduler.cancel()
        await runner.cleanup()
        await fast.close()
        await coordinator.close()

    asyncio.run(main())


@contextlib.contextmanager
def agent_processes(mesh: Mesh, agents: dict[str, str], logs: Path) -> Iterator[None]:
    """examples/echo_worker.py once per agent, until the block ends."""
    workers = {}
    try:
        for agent_id, url in agents.items():
            workers[url] = start_echo_worker(
                mesh, agent_id, url, AGENT_SLOTS, logs, {"AGENT_MESH_LOG_LEVEL": "warning"}
            )
        wait_ready(workers)
        yield
    finally:
        for worker in workers.values():
            worker.stop()


def task(i: int) -> dict[str, Any]:
    return {
        "taskType": "echo",
        "payload": {"n": i, "text": "fast path"},
        "requiredCapabilities": ["echo"],
        "retries": 0,
        "timeoutSeconds": 60,
    }


def agent_task(i: int, run_id: str) -> dict[str, Any]:
    return {"taskUid": f"{run_id}-{i}", "attempt": 1, "taskType": "echo", "payload": {"n": i}}


HEADERS: dict[str, str] = {"Content-Type": "application/json"}


async def run(
    url: str,
    bodies: list[bytes],
    inflight: int,
    tasks_per_request: int,
    check: str,
    pid: int | None = None,
) -> dict[str, Any]:
    """POST every body with `inflight` requests at once; tasks/s and request latencies,
    and the CPU time process `pid` (the operator side) spent per task. `check` says what a
    good answer is (every task Completed, or answered with a result)."""
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=inflight)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=600)
    ) as session:

        async def post(i: int) -> None:
            nonlocal failures
            started = time.perf_counter()
            async with session.post(url, data=bodies[i], headers=HEADERS) as response:
                answer = await response.json(content_type=None)
            latencies.append(time.perf_counter() - started)
            failures += _failures(answer, check, tasks_per_request)

        cpu_before = cpu_seconds(pid) if pid else None
        elapsed = await closed_loop(post, len(bodies), inflight)
        cpu_after = cpu_seconds(pid) if pid else None
    total = len(bodies) * tasks_per_request
    request = summary(latencies, scale=1000, prefix="request_", suffix="_ms")
    return {
        "tasks": total,
        "tasks_per_request": tasks_per_request,
        "inflight_requests": inflight,
        "seconds": round(elapsed, 3),
        "tasks_per_s": round(total / elapsed),
        **{k: round(v, 2) for k, v in request.items()},
        "failed_tasks": failures,
        "operator_cpu_us_per_task": (
            round((cpu_after - cpu_before) / total * 1e6)
            if cpu_before is not None and cpu_after is not None
            else None
        ),
    }


def _failures(answer: Any, check: str, n: int) -> int:
    if check == "mesh-single":
        return 0 if answer.get("phase") == "Completed" else 1
    if check == "mesh-batch":
        items = answer.get("tasks") or []
        return n - sum(1 for t in items if t.get("phase") == "Completed")
    if check == "agent-single":
        return 0 if "result" in answer else 1
    items = answer.get("results") or []
    return n - sum(1 for t in items if "result" in t)


def _enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


async def through_operator(
    mesh: Mesh, quick: bool, server: Child, profile_flag: Event | None
) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        HEADERS["Authorization"] = f"Bearer {await mesh.exchange(session, 'bench-client')}"
    single_n = 2_000 if quick else 10_000
    batch_n = 20_000 if quick else 100_000
    submit = f"{mesh.url}/v1/tasks"
    pid = server.pid
    # warm-up: connections, token caches, router pools
    await run(submit, [_enc(task(i)) for i in range(500)], 32, 1, "mesh-single")
    warm = [_enc({"tasks": [task(i) for i in range(100)]}) for _ in range(20)]
    await run(submit, warm, 4, 100, "mesh-batch")

    bodies = [_enc(task(i)) for i in range(single_n)]
    row = await run(submit, bodies, 64, 1, "mesh-single", pid)
    rows = [{"row": "operator, 1 task per request", **row}]
    if profile_flag is not None:
        profile_flag.set()
        await asyncio.sleep(1.2)  # the server polls the flag twice a second
    for size, inflight in ((100, 8), (1000, 4)):
        bodies = [
            _enc({"tasks": [task(r * size + i) for i in range(size)]})
            for r in range(batch_n // size)
        ]
        row = await run(submit, bodies, inflight, size, "mesh-batch", pid)
        rows.append({"row": f"operator, batches of {size:,}", **row})
    return rows


async def agent_ceiling(mesh: Mesh, agent_id: str, url: str, quick: bool) -> list[dict[str, Any]]:
    """One echo agent called directly with the operator's work: the most the operator
    could pass on to it. The agent takes only tokens addressed to it: the bench client's
    token is exchanged for one (as the operator mints its own per agent)."""
    (token,) = await mesh.recipient_tokens("bench-client", [agent_id])
    HEADERS["Authorization"] = f"Bearer {token}"
    single_n = 2_000 if quick else 10_000
    batch_n = 20_000 if quick else 100_000
    run_id = f"{time.time_ns()}"
    bodies = [_enc(agent_task(i, run_id + "s")) for i in range(single_n)]
    row = await run(f"{url}/v1/tasks", bodies, 64, 1, "agent-single")
    rows = [{"row": "one agent directly, 1 task per request", **row}]
    # two batches of 100 in flight: within the agent's 256 slots
    bodies = [
        _enc({"tasks": [agent_task(r * 100 + i, run_id + "b") for i in range(100)]})
        for r in range(batch_n // 100)
    ]
    row = await run(f"{url}/v1/tasks/batch", bodies, 2, 100, "agent-batch")
    rows.append({"row": "one agent directly, batches of 100", **row})
    return rows


def measure(args: Any, batch_dispatch: bool, ceiling: bool) -> dict[str, Any]:
    """One operator side (per-task or batched dispatch) with fresh agent processes."""
    port = free_port()
    mesh = Mesh(local_url(port), NAMESPACE, CREDENTIAL)
    agents = {f"echo-{i}": local_url(free_port()) for i in range(args.agents)}
    profile_out = result_path(f"fastpath_server_{'batched' if batch_dispatch else 'per_task'}.prof")
    profile_flag = SPAWN.Event()
    with tempfile.TemporaryDirectory() as tmp:
        options = {
            "log_file": None if args.no_logs else str(Path(tmp) / "operator.log"),
            "profile": args.profile,
            "profile_out": str(profile_out),
            "profile_flag": profile_flag,
            "batch_dispatch": batch_dispatch,
        }
        server = Child("operator side", serve, port, agents, options, quiet=False, grace=30)
        with server, agent_processes(mesh, agents, Path(tmp)):
            rows = asyncio.run(
                through_operator(mesh, args.quick, server, profile_flag if args.profile else None)
            )
            if ceiling:
                agent_id, url = next(iter(agents.items()))
                rows += asyncio.run(agent_ceiling(mesh, agent_id, url, args.quick))
        log_bytes = (Path(tmp) / "operator.log").stat().st_size if options["log_file"] else 0
    out: dict[str, Any] = {
        "dispatch": "batched" if batch_dispatch else "per task",
        "operator_log_bytes": log_bytes,
        "rows": rows,
    }
    if args.profile:
        out["profile_file"] = os.path.relpath(profile_out, ROOT)
        out["profile_top"] = top_functions(profile_out)
    return out


def main() -> int:
    parser = cli.BenchParser(__doc__)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-logs", action="store_true")
    parser.add_argument("--dispatch", choices=("both", "per-task", "batched"), default="both")
    args = parser.parse()
    modes = {"both": (False, True), "per-task": (False,), "batched": (True,)}[args.dispatch]
    runs = [measure(args, mode, ceiling=i == len(modes) - 1) for i, mode in enumerate(modes)]
    rows = [{"dispatch": r["dispatch"], **row} for r in runs for row in r["rows"]]
    width = max(len(r["row"]) for r in rows)

    def dispatch(r: Mapping[str, Any]) -> str:
        return str(r["dispatch"]) if r["row"].startswith("operator") else "-"

    def unit(key: str, spec: str, unit: str) -> Callable[[Mapping[str, Any]], str | None]:
        return lambda r: None if r[key] is None else f"{format(r[key], spec)} {unit}"

    print(
        table(
            [
                label(9, "dispatch", dispatch),
                label(width, "", "row"),
                Column("tasks/s", 8, ",", "tasks_per_s"),
                Column("op CPU/task", 12, key=unit("operator_cpu_us_per_task", "", "us")),
                Column("req p50", 10, key=unit("request_p50_ms", ".2f", "ms")),
                Column("req p99", 10, key=unit("request_p99_ms", ".2f", "ms")),
                Column("failed", 7, key="failed_tasks"),
            ],
            rows,
        )
    )
    for r in runs:
        if "profile_top" in r:
            print(f"\noperator side, {r['dispatch']} dispatch, batched rows:")
            print(r.pop("profile_top"))
    write_result(
        "fastpath",
        {
            "agents": args.agents,
            "agent_slots": AGENT_SLOTS,
            "operator_logging": not args.no_logs,
            "quick": args.quick,
            "runs": runs,
        },
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
