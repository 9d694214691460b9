"""The CR path of tasks (issue 7) on a real control plane: MeshTasks created through the
apiserver as fast as several creators can, dispatched by one operator process to
echo_worker agent processes, watched until Completed; then the operator's memory per
pending task (no agent can take them).

    .venv/bin/python bench/tasks_bench.py [--quick] [--profile] [--webhooks]

Everything runs on this machine over loopback: etcd + kube-apiserver (agent_mesh.devcluster,
TLS and RBAC as the tests run them), the operator (`python -m agent_mesh operator`, one
namespace, admission webhook off unless --webhooks), the agents (examples/echo_worker.py,
registered as external MeshAgents), and the creator and the watcher, each in a process of
its own. Latency is timed on one clock (CLOCK_MONOTONIC, shared by processes): from the
moment a creator sends the POST to the moment the watcher reads the event in which the
task's phase becomes Completed (creationTimestamp has only second resolution).

With --profile the operator is sampled by py-spy (on PATH, in .venv/bin or $PY_SPY) during
an extra burst after the measured ones. AGENT_MESH_BENCH_CPROFILE=FILE instead runs the
operator under cProfile (every figure then carries its overhead).

Prints a table and writes bench/results/tasks.json. Asserts nothing. Every process it
starts is stopped by pid at the end, also on failure; its temporary directory is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import datetime as dt
import gc
import json
import logging
import multiprocessing
import os
import platform
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, cast

import aiohttp

from agent_mesh.devcluster import Binaries, ControlPlane, ensure_binaries
from agent_mesh.devcluster.processes import runs_binary, spawn, terminate
from agent_mesh.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
ECHO_WORKER = ROOT / "examples" / "echo_worker.py"
GROUP, VERSION, PLURAL = "agentmesh.io", "v1alpha1", "meshtasks"
FINAL = frozenset({"Completed", "Failed", "TimedOut"})
NOBODY = "capability-nobody-has"
NO_STATUS = "-"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MP = multiprocessing.get_context("spawn")
AS_OPERATOR = "--as-operator"
TRACE_DIR = "BENCH_TRACEMALLOC_DIR"
NO_TRUST_ENV = "BENCH_NO_TRUST_ENV"


# --- processes on this machine (/proc) -------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (its threads included), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time all processes of this machine spent (not idle, not iowait), all CPUs."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and VmHWM of `pid` in KiB."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def child_running(binary: Path) -> int | None:
    """The pid of our child process that executes `binary` (the plane's components)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == me and runs_binary(int(entry.name), binary):
            return int(entry.name)
    return None


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of `values` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# --- reaching the apiserver from any process ---------------------------------------------


@dataclass(frozen=True)
class ApiServer:
    """How a process reaches the apiserver: its URL and the admin client certificate."""

    server: str
    pki: str

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(Path(self.pki) / "ca.crt"))
        ctx.load_cert_chain(Path(self.pki) / "admin.crt", Path(self.pki) / "admin.key")
        return ctx

    def tasks_url(self, namespace: str) -> str:
        return f"{self.server}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        content = "application/merge-patch+json" if method == "PATCH" else "application/json"
        req = urllib.request.Request(
            f"{self.server}{path}", data=data, method=method, headers={"Content-Type": content}
        )
        with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as r:
            return json.loads(r.read() or b"null")

    def ensure(self, path: str, body: dict[str, Any]) -> None:
        """POST `body` to `path`; an object that exists already is fine."""
        try:
            self.request("POST", path, body)
        except urllib.error.HTTPError as error:
            if error.code != 409:
                raise


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, KeyError, ValueError):
            last = check()
            if last:
                return last
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def apply_crds(api: ApiServer) -> None:
    from agent_mesh.api.crdgen import crd_objects

    crds = crd_objects()
    for crd in crds:
        api.ensure("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    for crd in crds:
        name, plural = crd["metadata"]["name"], crd["spec"]["names"]["plural"]

        def established(n: str = name) -> bool:
            got = api.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{n}")
            conds = (got.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

        def serves(p: str = plural) -> bool:  # Established comes before lists are served
            try:
                api.request("GET", f"/apis/{GROUP}/{VERSION}/{p}?limit=1")
            except urllib.error.HTTPError:
                return False
            return True

        wait_until(f"CRD {name} Established", established, 60)
        wait_until(f"CRD {name} served", serves, 60)


def create_namespace(api: ApiServer, name: str) -> str:
    api.ensure("/api/v1/namespaces", {"metadata": {"name": name}})
    return name


# --- the operator and the agents ---------------------------------------------------------


@dataclass
class Started:
    """A process this benchmark started, stopped by its pid."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    grace: float = 10.0

    def stop(self) -> None:
        if self.process.poll() is None:
            terminate(self.process.pid, grace=self.grace, child=self.process)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Operator(Started):
    mesh_port: int = 0
    grace: float = 60.0  # kopf drains its per-object workers before it exits
    ca_file: Path | None = None  # the CA bundle it publishes (its mesh API serves https)

    @property
    def mesh_url(self) -> str:
        return f"https://127.0.0.1:{self.mesh_port}"

    def tls(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None


def answers(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1, context=context) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def start_operator(
    plane: ControlPlane,
    namespace: str,
    operator_ns: str,
    log: Path,
    webhooks: bool,
    shim: dict[str, str] | None = None,
) -> Operator:
    """`python -m agent_mesh operator` watching `namespace`, as tests/conftest.py starts it;
    with `shim`, run by this file's as_operator() with those settings instead."""
    liveness, mesh = free_port(), free_port()
    argv = [sys.executable]
    profile = os.environ.get("AGENT_MESH_BENCH_CPROFILE")
    if profile:
        argv += ["-m", "cProfile", "-o", f"{profile}.{namespace}"]
    argv += [__file__, AS_OPERATOR] if shim else ["-m", "agent_mesh"]
    argv += [
        "operator",
        "--namespace",
        namespace,
        "--liveness-port",
        str(liveness),
        "--mesh-port",
        str(mesh),
        "--operator-namespace",
        operator_ns,
    ]
    argv += ["--webhook-port", str(free_port())] if webhooks else ["--no-webhooks"]
    tmp = log.parent / "tmp"  # the operator's temporary files go with the bench's
    tmp.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "KUBECONFIG": str(plane.kubeconfig),
        "TMPDIR": str(tmp),
        "AGENT_MESH_EGRESS_ALLOW_LOOPBACK": "true",  # the bench's agents are on 127.0.0.1
        **(shim or {}),
    }
    process = spawn(argv, log, detached=False, env=env)
    op = Operator(f"operator[{namespace}]", process, log, mesh_port=mesh)
    api = ApiServer(plane.server, str(plane.pki_dir))
    ca_path = f"/api/v1/namespaces/{operator_ns}/configmaps/agent-mesh-ca.crt"

    def up(url: str, tls: bool = False) -> bool:
        if op.process.poll() is not None:
            raise RuntimeError(f"the operator exited:\n{op.tail()}")
        if tls:  # the CA bundle the operator publishes, as tests/conftest.py reads it
            ca_file = log.with_name(f"{log.stem}-ca.crt")
            ca_file.write_text(api.request("GET", ca_path)["data"]["ca.crt"])
            op.ca_file = ca_file
        return answers(url, op.tls())

    wait_until(
        "the operator's liveness endpoint", lambda: up(f"http://127.0.0.1:{liveness}/healthz"), 90
    )
    wait_until("the operator's mesh API", lambda: up(f"{op.mesh_url}/readyz", tls=True), 90)
    return op


def register_agent(api: ApiServer, namespace: str, name: str, slots: int) -> tuple[str, str]:
    """An external MeshAgent on a fresh loopback port: (its URL, its credential)."""
    url = f"http://127.0.0.1:{free_port()}"
    api.ensure(
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/meshagents",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MeshAgent",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "agentType": "worker",
                "capabilities": ["echo"],
                "endpoint": url,
                "maxConcurrentTasks": slots,
            },
        },
    )

    def secret_name() -> str | None:
        got = api.request(
            "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/meshagents/{name}"
        )
        return ((got.get("status") or {}).get("credential") or {}).get("secretName")

    secret = wait_until(f"the credential of {name}", secret_name, 60)
    data = api.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{secret}")["data"]
    return url, base64.b64decode(data["credential"]).decode()


def start_agent(
    op: Operator, namespace: str, name: str, url: str, credential: str, slots: int, logs: Path
) -> Started:
    """examples/echo_worker.py as agent `name`, as tests/agentprocs.py launches it."""
    env = {
        **os.environ,
        "AGENT_MESH_URL": op.mesh_url,
        "AGENT_MESH_CA_FILE": str(op.ca_file),
        "AGENT_MESH_NAMESPACE": namespace,
        "AGENT_MESH_AGENT_ID": name,
        "AGENT_MESH_CREDENTIAL": credential,
        "AGENT_MESH_HOST": "127.0.0.1",
        "AGENT_MESH_PORT": url.rsplit(":", 1)[1],
        "AGENT_MESH_HEARTBEAT_SECONDS": "5",
        "AGENT_MESH_MAX_CONCURRENT_TASKS": str(slots),
        "AGENT_MESH_LOG_FORMAT": "text",
    }
    log = logs / f"{name}.log"
    return Started(
        name, spawn([sys.executable, str(ECHO_WORKER)], log, detached=False, env=env), log
    )


def scrape(op: Operator) -> dict[str, float]:
    """The operator's agentmesh_* counters (GET /metrics on the mesh API)."""
    try:
        with urllib.request.urlopen(f"{op.mesh_url}/metrics", timeout=5, context=op.tls()) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(agentmesh_[a-z_]+?(?:_total)?(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if m and not m.group(1).split("{")[0].endswith(("_bucket", "_created")):
            out[m.group(1)] = float(m.group(2))
    return out


# --- the watcher and the creators (processes of their own) -------------------------------


@dataclass
class Seen:
    """What the watcher saw of one task."""

    added: float
    added_wall: float
    modified: int = 0
    done: float | None = None
    done_wall: float | None = None
    phase: str | None = None
    reason: str | None = None  # of condition Assigned, last seen
    path: list[str] = field(default_factory=list)
    trail: list[str] = field(default_factory=list)  # event type:phase:attempt:conditions


def _quiet() -> None:
    logging.disable(logging.CRITICAL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop


def watcher_main(
    api: ApiServer,
    namespace: str,
    prefix: str,
    expected: Synchronized[int],
    done_phases: frozenset[str],
    timeout: float,
    linger: float,
    ready: Event,
    out: Connection,
) -> None:
    _quiet()
    started = time.process_time()
    seen = asyncio.run(watch(api, namespace, prefix, expected, done_phases, timeout, linger, ready))
    out.send(
        {
            "seen": {k: vars(v) for k, v in seen.items()},
            "cpu_s": time.process_time() - started,
        }
    )


async def watch(
    api: ApiServer,
    namespace: str,
    prefix: str,
    expected: Synchronized[int],
    done_phases: frozenset[str],
    seconds: float,
    linger: float,
    ready: Event,
) -> dict[str, Seen]:
    """Every event on the namespace's MeshTasks named `prefix`*, until `expected` of them
    reached one of `done_phases` (then `linger` seconds more, to count late writes). A task
    without status has phase NO_STATUS."""
    url = api.tasks_url(namespace)
    seen: dict[str, Seen] = {}
    done = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(ssl=api.ssl_context())
    async with aiohttp.ClientSession(connector=connector, read_bufsize=1 << 20) as session:
        async with session.get(url, params={"limit": "1"}) as r:
            version = (await r.json())["metadata"]["resourceVersion"]

        def take(line: bytes, t: float, wall: float) -> None:
            nonlocal version, done
            event = json.loads(line)
            obj = event["object"]
            if event["type"] == "ERROR":
                raise RuntimeError(f"watch error: {obj}")
            meta = obj["metadata"]
            version = meta["resourceVersion"]
            name = meta["name"]
            if not name.startswith(prefix):
                return
            task = seen.get(name)
            if task is None:
                task = seen[name] = Seen(t, wall)
            if event["type"] == "MODIFIED":
                task.modified += 1
            status = obj.get("status") or {}
            phase = status.get("phase") or NO_STATUS
            if phase != task.phase:
                task.path.append(phase)
                task.phase = phase
            conditions = status.get("conditions") or ()
            for cond in conditions:
                if cond.get("type") == "Assigned":
                    task.reason = cond.get("reason")
            task.trail.append(
                f"{event['type'][0]}:{phase}:{status.get('attempt')}:{len(conditions)}"
            )
            if task.done is None and phase in done_phases:
                task.done, task.done_wall = t, wall
                done += 1

        async def consume() -> None:
            while True:  # a watch the apiserver ends is started again from `version`
                params = {
                    "watch": "1",
                    "resourceVersion": version,
                    "timeoutSeconds": str(max(1, int(deadline - time.monotonic()) + 5)),
                }
                no_limit = aiohttp.ClientTimeout()
                async with session.get(url, params=params, timeout=no_limit) as r:
                    if r.status != 200:
                        raise RuntimeError(f"watch: HTTP {r.status}: {await r.text()}")
                    async for line in r.content:
                        take(line, time.monotonic(), time.time())

        reader = asyncio.create_task(consume())
        ready.set()
        stop_at: float | None = None
        while not reader.done():
            now = time.monotonic()
            if stop_at is None and done >= expected.value:
                stop_at = now + linger
            if now >= (stop_at if stop_at is not None else deadline):
                break
            await asyncio.sleep(0.05)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return seen


def creator_main(
    api: ApiServer,
    namespace: str,
    prefix: str,
    count: int,
    concurrency: int,
    rate: float | None,
    spec: dict[str, Any],
    out: Connection,
) -> None:
    _quiet()
    started = time.process_time()
    result = asyncio.run(create(api, namespace, prefix, count, concurrency, rate, spec))
    result["cpu_s"] = time.process_time() - started
    out.send(result)


async def create(
    api: ApiServer,
    namespace: str,
    prefix: str,
    count: int,
    concurrency: int,
    rate: float | None,
    spec: dict[str, Any],
) -> dict[str, Any]:
    """POST `count` MeshTasks with `concurrency` requests in flight (closed loop), or at
    `rate` per second (open loop, at most `concurrency` in flight)."""
    url = api.tasks_url(namespace)
    sent = [0.0] * count
    acked = [0.0] * count
    errors: collections.Counter[str] = collections.Counter()
    failed: list[str] = []
    position = 0
    start = time.monotonic() + 0.05

    async def creator(session: aiohttp.ClientSession) -> None:
        nonlocal position
        while position < count:
            i = position
            position += 1
            if rate:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            name = f"{prefix}{i:06d}"
            body = json.dumps(
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "MeshTask",
                    "metadata": {"name": name},
                    "spec": {**spec, "payload": {"i": i}},
                }
            )
            sent[i] = time.monotonic()
            for attempt in range(10):
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    await r.read()
                    status = r.status
                if status == 201:
                    break
                errors[str(status)] += 1
                if status not in (429, 500, 503, 504) or attempt == 9:
                    failed.append(name)
                    break
                await asyncio.sleep(0.05 * (attempt + 1))
            acked[i] = time.monotonic()

    connector = aiohttp.TCPConnector(ssl=api.ssl_context(), limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(creator(session) for _ in range(concurrency)))
    return {"sent": sent, "acked": acked, "errors": dict(errors), "failed": failed}


def requests_main(
    api: ApiServer, requests: list[tuple[str, str, str]], concurrency: int, out: Connection
) -> None:
    _quiet()
    started = time.process_time()
    result = asyncio.run(send_all(api, requests, concurrency))
    result["cpu_s"] = time.process_time() - started
    out.send(result)


async def send_all(
    api: ApiServer, requests: list[tuple[str, str, str]], concurrency: int
) -> dict[str, Any]:
    """(method, path, JSON body) each, `concurrency` in flight; merge patches for PATCH."""
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    position = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal position
        while position < len(requests):
            method, path, body = requests[position]
            position += 1
            kind = "application/merge-patch+json" if method == "PATCH" else "application/json"
            t = time.monotonic()
            async with session.request(
                method, f"{api.server}{path}", data=body, headers={"Content-Type": kind}
            ) as r:
                await r.read()
                if r.status >= 300:
                    errors[str(r.status)] += 1
            latencies.append(time.monotonic() - t)

    connector = aiohttp.TCPConnector(ssl=api.ssl_context(), limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds = time.monotonic() - start
    return {"seconds": seconds, "latencies": latencies, "errors": dict(errors)}


def apiserver_cost(
    api: ApiServer, fleet: Fleet, requests: list[tuple[str, str, str]], concurrency: int
) -> dict[str, Any]:
    """Requests per second and the apiserver's and etcd's CPU per request."""
    rx, tx = MP.Pipe(duplex=False)
    proc = MP.Process(target=requests_main, args=(api, requests, concurrency, tx), daemon=True)
    cpu0 = fleet.cpu()
    proc.start()
    try:
        got = receive(rx, proc, 600, "the request sender")
    finally:
        proc.join(10)
    cpu1 = fleet.cpu()
    n = max(1, len(requests))
    return {
        "requests": len(requests),
        "per_second": n / max(1e-9, got["seconds"]),
        "p50_ms": quantile(got["latencies"], 0.5) * 1000,
        "p99_ms": quantile(got["latencies"], 0.99) * 1000,
        "apiserver_cpu_ms": (cpu1["kube-apiserver"] - cpu0["kube-apiserver"]) * 1000 / n,
        "etcd_cpu_ms": (cpu1["etcd"] - cpu0["etcd"]) * 1000 / n,
        "errors": got["errors"],
    }


def completed_status(i: int) -> dict[str, Any]:
    """A MeshTask status like the operator's final write (shape and size)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def cond(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
            "observedGeneration": 1,
        }

    done = "Completed by agent echo-0 on attempt 1."
    return {
        "phase": "Completed",
        "attempt": 1,
        "attempts": [
            {
                "attempt": 1,
                "agentId": "echo-0",
                "startedAt": now,
                "finishedAt": now,
                "outcome": "Succeeded",
            }
        ],
        "agentId": "echo-0",
        "assignedAt": now,
        "startedAt": now,
        "completedAt": now,
        "result": {"i": i},
        "observedGeneration": 1,
        "conditions": [
            cond("Assigned", "True", "AgentSelected", "Assigned to agent echo-0 (attempt 1)."),
            cond("Running", "False", "AttemptFinished", done),
            cond("Succeeded", "True", "ResultReceived", done),
            cond("Ready", "True", "ResultReceived", "status.result holds the result."),
        ],
    }


def event_body(namespace: str, name: str, i: int) -> dict[str, Any]:
    """A Kubernetes Event like the operator's TaskCompleted (kube/events.py)."""
    now = dt.datetime.now(dt.UTC).isoformat()
    return {
        "metadata": {"name": f"{name}.{i:012x}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MeshTask",
            "namespace": namespace,
            "name": name,
            "uid": f"{i:08d}-0000-4000-8000-{i:012d}",
        },
        "type": "Normal",
        "reason": "TaskCompleted",
        "message": "Completed by agent echo-0 on attempt 1.",
        "source": {"component": "agent-mesh-operator"},
        "reportingComponent": "agent-mesh-operator",
        "reportingInstance": "agent-mesh-operator",
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
    }


# --- one run: create, watch, measure -----------------------------------------------------


@dataclass
class Fleet:
    """The processes whose CPU time a run reports."""

    apiserver: int
    etcd: int
    operator: Operator | None = None
    agents: list[Started] = field(default_factory=list)

    def cpu(self) -> dict[str, float]:
        out = {"kube-apiserver": cpu_seconds(self.apiserver), "etcd": cpu_seconds(self.etcd)}
        if self.operator is not None:
            out["operator"] = cpu_seconds(self.operator.pid)
        if self.agents:
            out["agents"] = sum(cpu_seconds(a.pid) for a in self.agents)
        return out


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


def receive(conn: Connection, proc: Any, timeout: float, what: str) -> Any:
    """What `proc` sends on `conn`; fails when it dies first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.poll(0.5):
            return conn.recv()
        if not proc.is_alive() and not conn.poll(0.5):
            raise RuntimeError(f"{what} exited with {proc.exitcode} and sent nothing")
    raise RuntimeError(f"{what} did not finish within {timeout:.0f} s")


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
    expected = cast("Synchronized[int]", MP.Value("i", count))
    ready = MP.Event()
    watch_rx, watch_tx = MP.Pipe(duplex=False)
    create_rx, create_tx = MP.Pipe(duplex=False)
    watcher = MP.Process(
        target=watcher_main,
        args=(api, namespace, prefix, expected, done_phases, timeout, linger, ready, watch_tx),
        daemon=True,
    )
    creator = MP.Process(
        target=creator_main,
        args=(api, namespace, prefix, count, concurrency, rate, spec, create_tx),
        daemon=True,
    )
    log = fleet.operator.log if fleet.operator is not None else None
    try:
        watcher.start()
        if not ready.wait(60):
            raise RuntimeError("the watcher did not start")
        if on_start is not None:
            on_start()
        metrics0 = scrape(fleet.operator) if fleet.operator is not None else {}
        offset = log.stat().st_size if log is not None else 0
        cpu0, wall0, busy0 = fleet.cpu(), time.monotonic(), machine_busy_seconds()
        creator.start()
        created: dict[str, Any] = receive(create_rx, creator, timeout, "the creator")
        if created["failed"]:
            with expected.get_lock():
                expected.value = count - len(created["failed"])
        watched: dict[str, Any] = receive(watch_rx, watcher, timeout + linger + 30, "the watcher")
        # the work a run causes may outlast its last completion (the operator catching up
        # with its watch): CPU and counters are read once the operator is idle again
        idle = wait_idle(fleet.operator.pid, quiet=0) if fleet.operator is not None else 0.0
        cpu1, wall1, busy1 = fleet.cpu(), time.monotonic(), machine_busy_seconds()
        metrics1 = scrape(fleet.operator) if fleet.operator is not None else {}
        lines, audit = operator_log(log, offset, prefix)
    finally:
        for proc in (creator, watcher):
            if proc.is_alive():
                proc.terminate()
            with contextlib.suppress(AssertionError):  # never started
                proc.join(10)
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
        "create_call_p50_ms": quantile(create_calls, 0.5) * 1000,
        "create_call_p99_ms": quantile(create_calls, 0.99) * 1000,
        "create_to_watch_added_p50_ms": quantile(to_watch, 0.5) * 1000,
        "create_to_watch_added_p99_ms": quantile(to_watch, 0.99) * 1000,
        # where the time goes (wall clock; the operator's audit log has ms resolution):
        # watch shows ADDED -> operator assigns -> agent's result in -> watch shows done
        "stages_ms": {
            stage: {
                "p50": quantile(values, 0.5) * 1000,
                "p90": quantile(values, 0.9) * 1000,
                "p99": quantile(values, 0.99) * 1000,
            }
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
        "latency_p50_s": quantile(latencies, 0.5),
        "latency_p90_s": quantile(latencies, 0.9),
        "latency_p99_s": quantile(latencies, 0.99),
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
        "others_cpu_share_of_machine": max(0.0, machine_busy - sum(cpu.values()))
        / (window * (os.cpu_count() or 1)),
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


def events_by_reason(api: ApiServer, namespace: str) -> dict[str, int]:
    """Kubernetes Events about MeshTasks in `namespace`, by reason."""
    got = api.request("GET", f"/api/v1/namespaces/{namespace}/events?limit=100000")
    reasons: collections.Counter[str] = collections.Counter()
    for item in got.get("items") or ():
        if (item.get("involvedObject") or {}).get("kind") == "MeshTask":
            reasons[str(item.get("reason"))] += 1
    return dict(reasons)


def delete_tasks(api: ApiServer, namespace: str) -> None:
    api.request("DELETE", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}", timeout=120)


# --- attribution of the operator's memory (tracemalloc, in this process) -----------------


def fresh(template: dict[str, Any], i: int) -> dict[str, Any]:
    """A copy of a real MeshTask object as the watch decodes it: new strings, new uid."""
    body: dict[str, Any] = json.loads(json.dumps(template))
    body["metadata"]["uid"] = f"{i:08d}-0000-4000-8000-{i:012d}"
    body["metadata"]["name"] = f"attr-{i:06d}"
    body["metadata"]["resourceVersion"] = str(10_000_000 + i)
    body["spec"]["payload"] = {"i": i}
    return body


def coordinator_bytes_per_task(template: dict[str, Any], count: int) -> float:
    """Coordinator.observe() of `count` pending tasks (status and conditions as written)."""
    from agent_mesh.auth.audit import AuditLog
    from agent_mesh.auth.authority import Authority
    from agent_mesh.coordinator import Coordinator
    from agent_mesh.domain.agents import AgentRegistry
    from agent_mesh.domain.clock import SystemClock
    from agent_mesh.domain.health import HealthTracker

    coordinator = Coordinator(
        registry=AgentRegistry(),
        tracker=HealthTracker(),
        authority=cast(Authority, None),  # observe() never reaches it
        audit=AuditLog(),
        clock=SystemClock(),
    )
    bodies = [json.dumps(fresh(template, i)) for i in range(count)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for text in bodies:
        coordinator.observe(json.loads(text))
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert coordinator.get(fresh(template, 0)["metadata"]["uid"]) is not None
    return used / count


def kopf_bytes_per_object(template: dict[str, Any], count: int) -> float | None:
    """kopf's ResourceMemory per watched object (kept until the object is deleted), with
    the operator's memo copied into it as kopf does. Private kopf API: None if it moved."""
    try:
        import kopf
        from kopf._core.reactor.inventory import ResourceMemories
    except ImportError:
        return None
    memobase = kopf.Memo(config=object(), cert_dir=Path("/tmp"), runtime=object())
    bodies = [fresh(template, i) for i in range(count)]

    async def remember() -> tuple[Any, int]:
        memories = ResourceMemories()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for body in bodies:
            await memories.recall(cast(Any, body), memobase=cast(Any, memobase))
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return memories, used

    _, used = asyncio.run(remember())
    return used / count


# --- profiling the operator ----------------------------------------------------------------


def py_spy() -> str | None:
    for candidate in (os.environ.get("PY_SPY"), shutil.which("py-spy"), ROOT / ".venv/bin/py-spy"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


def area(frame: str) -> str:
    """Which library or module a py-spy frame ("fn (path:line)") belongs to."""
    m = re.search(r"\((.*?)(?::\d+)?\)$", frame)
    path = m.group(1) if m else frame
    if "agent_mesh/" in path:
        return "agent_mesh." + path.split("agent_mesh/", 1)[1].removesuffix(".py").replace("/", ".")
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    m = re.search(r"python3\.\d+/(.+)$", path)
    if m:
        return "stdlib " + m.group(1).split("/", 1)[0].removesuffix(".py")
    return path


def summarize_profile(raw: Path, top: int = 20) -> dict[str, Any]:
    """Self time by area and by function, and inclusive time of agent_mesh functions, from
    py-spy's collapsed stacks (idle samples excluded)."""
    self_area: collections.Counter[str] = collections.Counter()
    self_fn: collections.Counter[str] = collections.Counter()
    incl_fn: collections.Counter[str] = collections.Counter()
    incl_area: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_fn[frames[-1]] += count
        self_area[area(frames[-1])] += count
        for name in set(frames):
            incl_fn[name] += count
        for a in {area(f) for f in frames}:
            incl_area[a] += count

    def share(
        c: collections.Counter[str], keep: Callable[[str], bool] = lambda _: True
    ) -> dict[str, float]:
        return {k: v / max(1, total) for k, v in c.most_common() if keep(k)}

    return {
        "samples": total,
        "self_by_area": dict(list(share(self_area).items())[:top]),
        "self_by_function": dict(list(share(self_fn).items())[:top]),
        "inclusive_by_area": dict(list(share(incl_area).items())[:top]),
        "inclusive_agent_mesh": dict(
            list(share(incl_fn, lambda f: "agent_mesh/" in f).items())[:top]
        ),
    }


# --- the benchmark -------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    stop: list[Callable[[], None]] = field(default_factory=list)

    def start(self, process: Started) -> Started:
        self.stop.append(process.stop)
        return process

    def cleanup(self) -> None:
        while self.stop:
            with contextlib.suppress(Exception):
                self.stop.pop()()


def echo_spec() -> dict[str, Any]:
    return {"taskType": "echo", "requiredCapabilities": ["echo"]}


def cr_path(bench: Bench, api: ApiServer, plane: ControlPlane, fleet: Fleet) -> dict[str, Any]:
    args = bench.args
    namespace = create_namespace(api, "bench-tasks")
    system = create_namespace(api, "bench-system")
    op = start_operator(plane, namespace, system, bench.work / "operator.log", args.webhooks)
    bench.start(op)
    fleet.operator = op
    registered = [
        (f"echo-{i}", *register_agent(api, namespace, f"echo-{i}", args.slots))
        for i in range(args.agents)
    ]

    def start_agents() -> None:
        for name, url, credential in registered:
            agent = start_agent(op, namespace, name, url, credential, args.slots, bench.work)
            fleet.agents.append(agent)
            bench.start(agent)

    start_agents()

    def healthy() -> bool:
        for agent in fleet.agents:
            if agent.process.poll() is not None:
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
        # consult proxy variables and ~/.netrc on every call (bench/tasks_bench.py shim).
        op.stop()
        for agent in fleet.agents:
            agent.stop()
        fleet.agents.clear()
        delete_tasks(api, namespace)  # the new operator need not list the finished ones
        log = bench.work / "operator-experiment.log"
        op = start_operator(plane, namespace, system, log, args.webhooks, shim={NO_TRUST_ENV: "1"})
        bench.start(op)
        fleet.operator = op
        start_agents()  # beating to the new operator's mesh API
        paced = figures.get("paced")
        rate = paced["offered_rate_per_s"] if paced else None
        out["experiment_no_trust_env"] = measure(bench, api, fleet, namespace, "x", rate)
    op.stop()
    fleet.operator = None
    for agent in fleet.agents:
        agent.stop()
    fleet.agents.clear()
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


def profiled_burst(
    bench: Bench, api: ApiServer, fleet: Fleet, namespace: str, prefix: str
) -> dict[str, Any]:
    tool = py_spy()
    if tool is None or fleet.operator is None:
        return {"skipped": "no py-spy (PATH, .venv/bin or $PY_SPY); see AGENT_MESH_BENCH_CPROFILE"}
    raw = bench.work / f"operator{prefix}.pyspy.txt"
    holder: list[subprocess.Popen[bytes]] = []
    pid = fleet.operator.pid

    def attach() -> None:
        proc = subprocess.Popen(
            [
                tool,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "100",
                "--format",
                "raw",
                "--full-filenames",
                "--nonblocking",
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(bench.work / "py-spy.log").open("ab"),
        )
        holder.append(proc)

        def kill() -> None:
            if proc.poll() is None:
                proc.kill()

        bench.stop.append(kill)
        time.sleep(1.0)  # py-spy attaches

    figures = run(
        api,
        fleet,
        namespace,
        f"{prefix}prof-",
        bench.args.tasks,
        spec=echo_spec(),
        concurrency=bench.args.creators,
        timeout=bench.args.timeout,
        on_start=attach,
    )
    for proc in holder:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    out: dict[str, Any] = {
        "tasks": figures["tasks"],
        "throughput_per_s_while_sampled": figures["throughput_per_s"],
    }
    if raw.exists():
        out.update(summarize_profile(raw))
        RESULTS.mkdir(exist_ok=True)
        shutil.copy(raw, RESULTS / f"tasks_profile_operator{prefix}.txt")
    else:
        out["error"] = (bench.work / "py-spy.log").read_text(errors="replace")[-2000:]
    return out


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
    op = start_operator(plane, namespace, system, log, args.webhooks)
    bench.start(op)
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
    op.stop()
    fleet.operator = None
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
        plane, namespace, system, log, bench.args.webhooks, shim={TRACE_DIR: str(traces)}
    )
    bench.start(op)
    fleet.operator = op
    wait_idle(op.pid)
    before = snapshot(op, traces, 0)
    rss0 = memory_kib(op.pid)
    pend(bench, api, fleet, namespace, "traced-", count)
    after = snapshot(op, traces, 1)
    rss1 = memory_kib(op.pid)
    op.stop()
    fleet.operator = None
    out = attribute(before, after, count)
    out["tasks"] = count
    out["rss_bytes_per_task_while_traced"] = (
        (rss1.get("VmRSS", 0) - rss0.get("VmRSS", 0)) * 1024 / count
    )
    return out


def wait_idle(pid: int, quiet: float = 6.0, limit: float = 180.0) -> float:
    """Wait until `pid` has used under 5% of a CPU for 2 s (it has caught up with its
    watch), then `quiet` seconds more (kopf's per-object workers exit after 5 s idle);
    the seconds it took."""
    started = time.monotonic()
    calm = 0
    last = cpu_seconds(pid)
    while calm < 2 and time.monotonic() - started < limit:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        calm = calm + 1 if now - last < 0.05 else 0
        last = now
    time.sleep(quiet)
    return time.monotonic() - started


def snapshot(op: Operator, traces: Path, n: int) -> Path:
    os.kill(op.pid, signal.SIGUSR1)
    path = traces / f"snap-{n}.bin"
    wait_until(f"tracemalloc snapshot {n}", path.exists, 120)
    return path


def allocated_by(frames: list[tracemalloc.Frame]) -> tuple[str, str]:
    """(package, site): the innermost frame of agent_mesh or an installed package that led
    to an allocation (stdlib frames such as json's are looked through)."""
    via = ""
    for frame in reversed(frames):  # most recent first
        path = frame.filename
        if "agent_mesh/" in path:
            rel = path.split("agent_mesh/", 1)[1]
            owner = "agent_mesh." + rel.removesuffix(".py").replace("/", ".")
            return owner, f"agent_mesh/{rel}:{frame.lineno}{via}"
        if "site-packages/" in path:
            rel = path.split("site-packages/", 1)[1]
            return rel.split("/", 1)[0].removesuffix(".py"), f"{rel}:{frame.lineno}{via}"
        if not via:
            via = f" (in {Path(path).name}:{frame.lineno})"
    last = frames[-1] if frames else None
    return "stdlib", f"{last.filename}:{last.lineno}" if last else "?"


def attribute(before: Path, after: Path, tasks: int, top: int = 15) -> dict[str, Any]:
    """Bytes per task the Python heap grew by, by package and by allocation site."""
    skip = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<unknown>")]
    old = tracemalloc.Snapshot.load(str(before)).filter_traces(skip)
    new = tracemalloc.Snapshot.load(str(after)).filter_traces(skip)
    packages: collections.Counter[str] = collections.Counter()
    sites: collections.Counter[str] = collections.Counter()
    total = 0
    for stat in new.compare_to(old, "traceback"):
        if not stat.size_diff:
            continue
        total += stat.size_diff
        package, site = allocated_by(list(stat.traceback))
        packages[package] += stat.size_diff
        sites[site] += stat.size_diff
    return {
        "traced_bytes_per_task": total / tasks,
        "by_package": {k: v / tasks for k, v in packages.most_common(top)},
        "by_site": {k: v / tasks for k, v in sites.most_common(top)},
    }


def baseline_creates(bench: Bench, api: ApiServer, fleet: Fleet) -> dict[str, Any]:
    """MeshTasks created in a namespace no operator watches: the apiserver alone."""
    namespace = create_namespace(api, "bench-baseline")
    count = min(bench.args.tasks, 1000)
    run(  # warm-up: connections, the CRD's schema and storage
        api,
        fleet,
        namespace,
        "basewarm-",
        50,
        spec=echo_spec(),
        concurrency=bench.args.creators,
        done_phases=frozenset({NO_STATUS}),
        timeout=120,
        linger=0.2,
    )
    figures = run(
        api,
        fleet,
        namespace,
        "base-",
        count,
        spec=echo_spec(),
        concurrency=bench.args.creators,
        done_phases=frozenset({NO_STATUS}),  # seen ADDED, without status
        timeout=bench.args.timeout,
        linger=0.5,
    )
    tasks_path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    concurrency = bench.args.creators
    patches = apiserver_cost(
        api,
        fleet,
        [
            (
                "PATCH",
                f"{tasks_path}/base-{i:06d}/status",
                json.dumps({"status": completed_status(i)}),
            )
            for i in range(count)
        ],
        concurrency,
    )
    small = apiserver_cost(  # the same objects again, one field: is it the size?
        api,
        fleet,
        [
            ("PATCH", f"{tasks_path}/base-{i:06d}/status", '{"status": {"phase": "Running"}}')
            for i in range(count)
        ],
        concurrency,
    )
    events = apiserver_cost(
        api,
        fleet,
        [
            (
                "POST",
                f"/api/v1/namespaces/{namespace}/events",
                json.dumps(event_body(namespace, f"base-{i:06d}", i)),
            )
            for i in range(count)
        ],
        concurrency,
    )
    delete_tasks(api, namespace)
    keep = (
        "tasks",
        "create_rate_per_s",
        "create_call_p50_ms",
        "create_call_p99_ms",
        "create_to_watch_added_p50_ms",
        "create_to_watch_added_p99_ms",
        "cpu_ms_per_task",
        "create_errors",
    )
    return {
        **{k: figures[k] for k in keep},
        "status_patch": patches,
        "status_patch_phase_only": small,
        "event_create": events,
    }


def report(out: dict[str, Any]) -> None:
    base, cr, mem = out["baseline_create"], out["cr_path"], out["pending_memory"]
    b = cr["burst"]
    print(
        f"\nCR path: {cr['agents']} echo agents x {cr['slots_per_agent']} slots, webhooks "
        f"{'on' if cr['webhooks'] else 'off'}, {b['creators_in_flight']} creates in flight"
    )
    print(
        f"{'run':<36} {'tasks':>6} {'create/s':>9} {'done/s':>7} {'p50 s':>7} {'p99 s':>7} "
        f"{'max s':>7} {'writes':>6}"
    )
    rows: list[tuple[str, dict[str, Any] | None]] = [("baseline: creates, no operator", base)]
    runs = [("", cr)]
    if cr.get("experiment_no_trust_env"):
        runs.append(("experiment trust_env=False: ", cr["experiment_no_trust_env"]))
    for label, figures in runs:
        rows.append((f"{label}burst", figures["burst"]))
        if figures["paced"]:
            rate = figures["paced"]["offered_rate_per_s"]
            rows.append((f"{label}paced at {rate:.0f}/s", figures["paced"]))
    for label, r in rows:
        if r is None:
            continue
        line = f"{label:<36} {r['tasks']:>6,} {r['create_rate_per_s']:>9.0f}"
        if "throughput_per_s" in r:
            line += (
                f" {r['throughput_per_s']:>7.1f} {r['latency_p50_s']:>7.3f} "
                f"{r['latency_p99_s']:>7.3f} {r['latency_max_s']:>7.3f} "
                f"{r['status_writes_per_task_mean']:>6.2f}"
            )
        print(line)
    print("targets: >= 200 tasks/s, p99 <= 1 s (create POST sent -> watch shows Completed)")
    patch, event = base["status_patch"], base["event_create"]
    create_ms = base["cpu_ms_per_task"]["kube-apiserver"]
    print(
        f"\napiserver CPU per request, no operator: create {create_ms:.2f} ms, status patch "
        f"{patch['apiserver_cpu_ms']:.2f} ms ({patch['per_second']:.0f}/s; phase only "
        f"{base['status_patch_phase_only']['apiserver_cpu_ms']:.2f} ms), Event create "
        f"{event['apiserver_cpu_ms']:.2f} ms ({event['per_second']:.0f}/s)"
    )
    events_per_task = sum(cr["events_per_task"].values())
    expected = (
        create_ms
        + b["status_writes_per_task_mean"] * patch["apiserver_cpu_ms"]
        + events_per_task * event["apiserver_cpu_ms"]
    )
    print(
        f"  a burst task = 1 create + {b['status_writes_per_task_mean']:.2f} status writes + "
        f"{events_per_task:.2f} Events = {expected:.1f} ms if priced so; measured "
        f"{b['cpu_ms_per_task']['kube-apiserver']:.1f} ms (the rest: watches, reads, load)"
    )
    for label, figures in runs:
        burst = figures["burst"]
        cpu = burst["cpu_ms_per_task"]
        print(
            f"\n{label or ''}CPU ms per task in the burst: "
            + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        )
        for run_name in ("burst", "paced"):
            r = figures.get(run_name)
            if r and r.get("stages_ms"):
                print(
                    f"  {run_name} stages p50 / p99 ms: create -> watch ADDED "
                    f"{r['create_to_watch_added_p50_ms']:.0f} / "
                    f"{r['create_to_watch_added_p99_ms']:.0f}, "
                    + ", ".join(
                        f"{k.replace('_', ' ')} {v['p50']:.0f} / {v['p99']:.0f}"
                        for k, v in r["stages_ms"].items()
                    )
                )
        print(
            f"  dispatches per task {burst['dispatches_per_task']:.2f}, completions counted per "
            f"task {burst['completions_counted_per_task']:.2f} (above 1: done twice)"
        )
        print(
            f"  CPU the run used per second of it: {burst['cpu_share_of_machine']:.0%} of "
            f"{os.cpu_count()} CPUs (other processes: {burst['others_cpu_share_of_machine']:.0%}) "
            f"over "
            f"{burst['window_s']:.1f} s; status writes per task: {burst['status_writes_per_task']}"
        )
    print(f"Kubernetes Events per task: {cr['events_per_task']}")
    print(f"operator log lines per task: {b['operator_log_lines_per_task']:.2f}")
    traced = mem["traced_operator"]
    print(f"\npending tasks (no capable agent), {mem['tasks']:,} tasks; target <= 5 KB per task")
    print(f"  operator RSS growth per task          {mem['rss_bytes_per_task']:>10,.0f} B")
    print(
        f"  of which the second half, per task    {mem['rss_bytes_per_task_second_half']:>10,.0f} B"
    )
    print(
        f"  Python heap kept per task (traced, {traced['tasks']:,} tasks) "
        f"{traced['traced_bytes_per_task']:>8,.0f} B, allocated by:"
    )
    for k, v in list(traced["by_package"].items())[:8]:
        print(f"    {k:<40} {v:>10,.0f} B")
    for k, v in mem["estimated_bytes_per_task"].items():
        print(f"  {k:<52} {v if v is None else f'{v:,.0f} B':>12}")
    print(f"  Assigned reasons on the pending tasks: {mem['assigned_reasons']}")
    for label, figures in runs:
        prof = figures.get("profile")
        if prof and "self_by_area" in prof:
            print(f"\n{label}operator profile (py-spy, {prof['samples']} busy samples), self time:")
            for k, v in list(prof["self_by_area"].items())[:12]:
                print(f"  {v:>6.1%}  {k}")


def source() -> dict[str, Any]:
    """Which agent_mesh was measured: its path, and the git state of its tree if any."""
    import agent_mesh

    path = Path(agent_mesh.__file__).resolve().parent
    out: dict[str, Any] = {"agent_mesh": str(path), "label": os.environ.get("BENCH_SOURCE")}
    git = ["git", "-C", str(path)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        out["git_head"] = head.stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True
        )
        out["uncommitted_files_in_package"] = len(changed.stdout.splitlines())
    return out


def as_operator(argv: list[str]) -> int:
    """The operator CLI run by this file, for what the plain `python -m agent_mesh` cannot
    do from outside: $BENCH_TRACEMALLOC_DIR traces allocations and dumps a snapshot there
    on SIGUSR1; $BENCH_NO_TRUST_ENV=1 is an experiment (its figures are labelled so): the
    Kubernetes client's aiohttp session stops consulting proxy variables and ~/.netrc."""
    if os.environ.get(NO_TRUST_ENV):
        from kubernetes_asyncio.client import rest

        original = rest.RESTClientObject.__init__

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            self.pool_manager._trust_env = False

        rest.RESTClientObject.__init__ = init  # type: ignore[method-assign]
    trace_dir = os.environ.get(TRACE_DIR)
    if trace_dir:
        tracemalloc.start(12)

        def dump(*_: Any) -> None:
            gc.collect()
            n = len(list(Path(trace_dir).glob("snap-*.bin")))
            partial = Path(trace_dir) / f"snap-{n}.part"
            tracemalloc.take_snapshot().dump(str(partial))
            partial.rename(partial.with_suffix(".bin"))

        signal.signal(signal.SIGUSR1, dump)
    from agent_mesh.cli import main as cli

    return cli(argv)


def main() -> int:
    if sys.argv[1:2] == [AS_OPERATOR]:
        return as_operator(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke)")
    parser.add_argument("--tasks", type=int, help="tasks per burst (default 2,000; quick 200)")
    parser.add_argument("--pending", type=int, help="pending tasks (default 5,000; quick 500)")
    parser.add_argument("--agents", type=int, default=4, help="echo_worker processes (4)")
    parser.add_argument("--slots", type=int, default=10, help="maxConcurrentTasks per agent (10)")
    parser.add_argument("--creators", type=int, default=16, help="creates in flight (16)")
    parser.add_argument(
        "--paced",
        type=float,
        default=0.5,
        help="then offer this fraction of the burst's throughput, open loop (0.5; 0: skip)",
    )
    parser.add_argument("--paced-seconds", type=float, default=20.0, help="length of it (20)")
    parser.add_argument("--webhooks", action="store_true", help="keep the admission webhook on")
    parser.add_argument("--profile", action="store_true", help="an extra burst under py-spy")
    parser.add_argument(
        "--experiment",
        action="store_true",
        help="then the same runs with the operator's Kubernetes client at trust_env=False",
    )
    parser.add_argument("--timeout", type=float, default=900, help="per run, seconds (900)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    args.tasks = args.tasks or (200 if args.quick else 2000)
    args.pending = args.pending or (500 if args.quick else 5000)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on SIGTERM too
    binaries: Binaries = ensure_binaries()
    work = Path(tempfile.mkdtemp(prefix="agent-mesh-tasks-bench-"))
    bench = Bench(args, work)
    failed = True
    try:
        plane = ControlPlane(binaries, work / "plane")
        bench.stop.append(plane.stop)
        plane.start()
        api = ApiServer(plane.server, str(plane.pki_dir))
        apiserver = child_running(binaries.kube_apiserver)
        etcd = child_running(binaries.etcd)
        assert apiserver is not None and etcd is not None
        fleet = Fleet(apiserver, etcd)
        apply_crds(api)
        started = time.monotonic()
        out: dict[str, Any] = {
            "benchmark": "tasks",
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "kubernetes": binaries.kubernetes_version,
                "etcd": binaries.etcd_version,
                "load_average_at_start": os.getloadavg(),
            },
            "quick": args.quick,
            "args": {k: v for k, v in vars(args).items() if k != "keep"},
            "cprofile": os.environ.get("AGENT_MESH_BENCH_CPROFILE"),
            "source": source(),
        }
        out["baseline_create"] = baseline_creates(bench, api, fleet)
        out["cr_path"] = cr_path(bench, api, plane, fleet)
        out["pending_memory"] = pending_memory(bench, api, plane, fleet)
        out["seconds"] = time.monotonic() - started
        out["when"] = dt.datetime.now(dt.UTC).isoformat()
        report(out)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "tasks.json").write_text(json.dumps(out, indent=2))
        print(f"wrote {RESULTS / 'tasks.json'}")
        failed = False
    finally:
        bench.cleanup()
        if failed or args.keep:
            print(
                f"logs kept in {work}" if args.keep else f"failed; logs were in {work}",
                file=sys.stderr,
            )
            if failed:
                for log in sorted(work.glob("*.log")):
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                    print(f"--- {log.name}\n{tail}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
