"""Fast-path throughput end to end on loopback: submit (POST /v1/tasks) → coordinator →
echo agent processes → result → answer, single-task requests against batched ones.

    .venv/bin/python bench/fastpath_bench.py [--quick] [--agents 2] [--profile]
        [--no-logs] [--dispatch both|per-task|batched]

The operator side is the real mesh API application with the real Coordinator, FastPath,
Router and transport, in a process of its own, with its auth state in memory (as
bench/meshserver.py does): in-memory fast-path tasks never touch the apiserver, so the
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

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import multiprocessing
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp

from agent_mesh.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
CREDENTIAL = "bench-credential"
NAMESPACE = "bench"
AGENT_SLOTS = 256


def _agent_record(agent_id: str, agent_type: str, endpoint: str | None) -> Any:
    from agent_mesh.auth.authority import credential_hash
    from agent_mesh.domain.agents import AgentRecord
    from agent_mesh.domain.health import HealthStatus

    return AgentRecord(
        namespace=NAMESPACE,
        name=agent_id,
        uid=f"uid-{agent_id}",
        agent_id=agent_id,
        agent_type=agent_type,
        capabilities=("echo",) if endpoint else (),
        service_account=None,
        credential_hash=credential_hash(CREDENTIAL),
        external=True,
        endpoint=endpoint,
        health=HealthStatus.HEALTHY,
        max_concurrent_tasks=AGENT_SLOTS,
    )


def _serve(
    port: int,
    agents: dict[str, str],
    ready: Event,
    stop: Event,
    options: dict[str, Any],
) -> None:
    """The operator side: mesh API + Coordinator + FastPath, auth state in memory."""
    import logging

    from aiohttp import web

    from agent_mesh.auth.audit import AuditLog
    from agent_mesh.auth.authority import Authority, AuthSettings
    from agent_mesh.auth.memory import (
        MemoryKeyStore,
        MemoryRevocationStore,
        StaticTokenReviewer,
        registry_fetcher,
    )
    from agent_mesh.coordinator import Coordinator
    from agent_mesh.domain.acl import PolicyIndex
    from agent_mesh.domain.agents import AgentRegistry
    from agent_mesh.domain.clock import SystemClock
    from agent_mesh.domain.health import HealthTracker
    from agent_mesh.health_monitor import HealthMonitor
    from agent_mesh.mesh.fastpath import FastPath
    from agent_mesh.mesh.server import create_app
    from agent_mesh.observability.logging import configure_logging
    from agent_mesh.transport.batching import BatchingTransport
    from agent_mesh.transport.client import TransportConfig

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
        records = [_agent_record(a, "worker", url) for a, url in agents.items()]
        records.append(_agent_record("bench-client", "orchestrator", None))
        for record in records:
            registry.upsert(record)
        audit = AuditLog(clock=clock)
        authority = Authority(
            AuthSettings(),
            registry=registry,
            policies=PolicyIndex(),
            keys=MemoryKeyStore(),
            revocation_store=MemoryRevocationStore(),
            reviewer=StaticTokenReviewer(),
            fetch_agent=registry_fetcher(registry),
            audit=audit,
            clock=clock,
        )
        await authority.start()
        monitor = HealthMonitor(HealthTracker(), registry, None, None, clock)
        transport = None
        if options["batch_dispatch"]:  # as the operator builds it (runtime.py)
            transport = BatchingTransport(TransportConfig(max_connections_per_agent=100, retries=0))
        coordinator = Coordinator(
            registry=registry,
            tracker=monitor.tracker,
            authority=authority,
            audit=audit,
            clock=clock,
            transport=transport,
        )
        for record in records:
            coordinator.agent_seen(record)
        fast = FastPath(coordinator)
        app = create_app(authority, monitor, monitor.tracker, 8 * 1024 * 1024, fast_path=fast)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
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


class Server:
    """The operator side in a spawned process, for the `with` block."""

    def __init__(self, port: int, agents: dict[str, str], options: dict[str, Any]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.ready, self.stop = ctx.Event(), ctx.Event()
        self.profile_flag = ctx.Event()
        options = {**options, "profile_flag": self.profile_flag}
        self.process = ctx.Process(
            target=_serve, args=(port, agents, self.ready, self.stop, options), daemon=True
        )

    def __enter__(self) -> Server:
        self.process.start()
        if not self.ready.wait(60):
            self.process.terminate()
            raise RuntimeError("the mesh API server did not start")
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop.set()
        self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


@contextlib.contextmanager
def agent_processes(mesh_url: str, agents: dict[str, str], logs: Path) -> Iterator[None]:
    """examples/echo_worker.py once per agent, until the block ends."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for agent_id, url in agents.items():
            env = {
                **os.environ,
                "AGENT_MESH_URL": mesh_url,
                "AGENT_MESH_NAMESPACE": NAMESPACE,
                "AGENT_MESH_AGENT_ID": agent_id,
                "AGENT_MESH_CREDENTIAL": CREDENTIAL,
                "AGENT_MESH_HOST": "127.0.0.1",
                "AGENT_MESH_PORT": url.rsplit(":", 1)[1],
                "AGENT_MESH_HEARTBEAT_SECONDS": "5",
                "AGENT_MESH_MAX_CONCURRENT_TASKS": str(AGENT_SLOTS),
                "AGENT_MESH_LOG_LEVEL": "warning",
                "AGENT_MESH_LOG_FORMAT": "text",
            }
            with (logs / f"{agent_id}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(ROOT / "examples" / "echo_worker.py")],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + 60
        for url in agents.values():
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"agent at {url} did not get ready")
                time.sleep(0.1)
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def token(mesh_url: str) -> str:
    body = {"namespace": NAMESPACE, "agentId": "bench-client", "credential": CREDENTIAL}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{mesh_url}/v1/token", json=body) as response,
    ):
        return str((await response.json())["token"])


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


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    queue = list(reversed(bodies))
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=inflight)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=600)
    ) as session:

        async def worker() -> None:
            nonlocal failures
            while queue:
                body = queue.pop()
                started = time.perf_counter()
                async with session.post(url, data=body, headers=HEADERS) as response:
                    answer = await response.json(content_type=None)
                latencies.append(time.perf_counter() - started)
                failures += _failures(answer, check, tasks_per_request)

        cpu_before = cpu_seconds(pid) if pid else None
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds(pid) if pid else None
    latencies.sort()
    total = len(bodies) * tasks_per_request
    return {
        "tasks": total,
        "tasks_per_request": tasks_per_request,
        "inflight_requests": inflight,
        "seconds": round(elapsed, 3),
        "tasks_per_s": round(total / elapsed),
        "request_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "request_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
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
    mesh_url: str, quick: bool, server: Server, profile: bool
) -> list[dict[str, Any]]:
    HEADERS["Authorization"] = f"Bearer {await token(mesh_url)}"
    single_n = 2_000 if quick else 10_000
    batch_n = 20_000 if quick else 100_000
    submit = f"{mesh_url}/v1/tasks"
    pid = server.process.pid
    # warm-up: connections, token caches, router pools
    await run(submit, [_enc(task(i)) for i in range(500)], 32, 1, "mesh-single")
    warm = [_enc({"tasks": [task(i) for i in range(100)]}) for _ in range(20)]
    await run(submit, warm, 4, 100, "mesh-batch")

    bodies = [_enc(task(i)) for i in range(single_n)]
    row = await run(submit, bodies, 64, 1, "mesh-single", pid)
    rows = [{"row": "operator, 1 task per request", **row}]
    if profile:
        server.profile_flag.set()
        await asyncio.sleep(1.2)  # the server polls the flag twice a second
    for size, inflight in ((100, 8), (1000, 4)):
        bodies = [
            _enc({"tasks": [task(r * size + i) for i in range(size)]})
            for r in range(batch_n // size)
        ]
        row = await run(submit, bodies, inflight, size, "mesh-batch", pid)
        rows.append({"row": f"operator, batches of {size:,}", **row})
    return rows


async def agent_ceiling(url: str, quick: bool) -> list[dict[str, Any]]:
    """One echo agent called directly with the operator's work: the most the operator
    could pass on to it."""
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


def print_profile(path: str, top: int = 30) -> str:
    out = io.StringIO()
    stats = pstats.Stats(path, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def measure(args: argparse.Namespace, batch_dispatch: bool, ceiling: bool) -> dict[str, Any]:
    """One operator side (per-task or batched dispatch) with fresh agent processes."""
    port = free_port()
    mesh_url = f"http://127.0.0.1:{port}"
    agents = {f"echo-{i}": f"http://127.0.0.1:{free_port()}" for i in range(args.agents)}
    profile_out = str(
        RESULTS / f"fastpath_server_{'batched' if batch_dispatch else 'per_task'}.prof"
    )
    with tempfile.TemporaryDirectory() as tmp:
        options = {
            "log_file": None if args.no_logs else str(Path(tmp) / "operator.log"),
            "profile": args.profile,
            "profile_out": profile_out,
            "batch_dispatch": batch_dispatch,
        }
        with Server(port, agents, options) as server, agent_processes(mesh_url, agents, Path(tmp)):
            rows = asyncio.run(through_operator(mesh_url, args.quick, server, args.profile))
            if ceiling:
                rows += asyncio.run(agent_ceiling(next(iter(agents.values())), args.quick))
        log_bytes = (Path(tmp) / "operator.log").stat().st_size if options["log_file"] else 0
    out: dict[str, Any] = {
        "dispatch": "batched" if batch_dispatch else "per task",
        "operator_log_bytes": log_bytes,
        "rows": rows,
    }
    if args.profile:
        out["profile_file"] = os.path.relpath(profile_out, ROOT)
        out["profile_top"] = print_profile(profile_out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-logs", action="store_true")
    parser.add_argument("--dispatch", choices=("both", "per-task", "batched"), default="both")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    modes = {"both": (False, True), "per-task": (False,), "batched": (True,)}[args.dispatch]
    runs = [measure(args, mode, ceiling=i == len(modes) - 1) for i, mode in enumerate(modes)]
    rows = [{"dispatch": r["dispatch"], **row} for r in runs for row in r["rows"]]
    width = max(len(r["row"]) for r in rows)
    print(f"{'dispatch':9}  {'':{width}}  tasks/s  op CPU/task   req p50    req p99  failed")
    for r in rows:
        cpu = r["operator_cpu_us_per_task"]
        dispatch = r["dispatch"] if r["row"].startswith("operator") else "-"
        print(
            f"{dispatch:9}  {r['row']:{width}}  {r['tasks_per_s']:>7,}"
            f"  {(f'{cpu} us' if cpu is not None else '-'):>11}"
            f"  {r['request_p50_ms']:>7.2f} ms  {r['request_p99_ms']:>7.2f} ms"
            f"  {r['failed_tasks']:>6}"
        )
    for r in runs:
        if "profile_top" in r:
            print(f"\noperator side, {r['dispatch']} dispatch, batched rows:")
            print(r.pop("profile_top"))
    result = {
        "benchmark": "fastpath",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "agents": args.agents,
        "agent_slots": AGENT_SLOTS,
        "operator_logging": not args.no_logs,
        "quick": args.quick,
        "runs": runs,
    }
    (RESULTS / "fastpath.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
