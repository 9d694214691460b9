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

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import json
import logging
import math
import multiprocessing
import os
import platform
import pstats
import resource
import signal
import socket
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from agent_mesh.auth.jwks import PublicKeySet
from agent_mesh.auth.keys import KeyRing
from agent_mesh.auth.revocation import RevocationList
from agent_mesh.auth.tokens import (
    AgentIdentity,
    MeshClaims,
    TokenIssuer,
    TokenVerifier,
    bearer_token,
)
from agent_mesh.domain.acl import Action, PolicyIndex
from agent_mesh.domain.clock import SystemClock
from agent_mesh.domain.errors import MeshError
from agent_mesh.domain.message import BROADCAST, Message, MessageType
from agent_mesh.sdk.agent import Agent
from agent_mesh.sdk.identity import TokenSource
from agent_mesh.transport.client import Outcome, Transport, TransportConfig
from agent_mesh.transport.metrics import (
    TRANSPORT_ACTIVE,
    TRANSPORT_DURATION,
    TRANSPORT_REQUESTS,
)

RESULTS = Path(__file__).parent / "results"
PAYLOAD = {"text": "x" * 512}
CALLER = "agent-0"  # an orchestrator in meshserver's registry: may message agents, broadcast
RECEIVER = "agent-1"
MESSAGES = "/v1/messages"
PER_HOLDER = 5000  # connections one client process holds at most
Call = Callable[[], Awaitable[None]]


# --- small helpers ----------------------------------------------------------------------


def fd_hard_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)


def raise_fd_limit() -> int:
    """RLIMIT_NOFILE soft limit raised to the hard limit (never beyond); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = fd_hard_limit()
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time spent by every process on the machine so far (all CPUs, not idle)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU time of this process and of its children that have ended (all of ours)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def listen_ports(count: int) -> list[int]:
    """`count` ports to listen on, below the ephemeral range: a port from free_port() can
    be taken by some process's outgoing connection before the server binds it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports: list[int] = []
    candidate = max(1024, low - 12_000) + os.getpid() % 1000 * 10
    while len(ports) < count:
        if candidate >= low:
            raise RuntimeError(f"no {count} free ports below the ephemeral range ({low})")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
                ports.append(candidate)
            except OSError:
                pass
        candidate += 1
    return ports


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> float:
    return seconds * 1000


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@contextlib.contextmanager
def profiled(path: str | Path | None) -> Iterator[None]:
    """cProfile the block into `path` (nothing when None)."""
    if path is None:
        yield
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(path)


@dataclass(frozen=True, slots=True)
class Mesh:
    """Where the mesh API runs and how its agents prove who they are (passed to children,
    which do not import bench/meshserver.py: an Agent process holds only what an agent
    does)."""

    url: str
    namespace: str
    credential: str

    def tokens(self, agent_id: str) -> TokenSource:
        return TokenSource(
            self.url, namespace=self.namespace, agent_id=agent_id, credential=self.credential
        )


class Child:
    """A spawned process of the bench: `target(*args, ready, stop)` sets `ready` once it
    serves and returns soon after `stop` is set. Every live Child is stopped by pid on
    exit (stop_all), politely first, then terminated, then killed."""

    live: ClassVar[list[Child]] = []

    def __init__(self, name: str, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.name = name
        self.ready = ctx.Event()
        self.stop_event = ctx.Event()
        self.process = ctx.Process(
            target=target, args=(*args, self.ready, self.stop_event), name=name, daemon=True
        )

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def start(self, timeout: float = 120) -> Child:
        self.process.start()
        Child.live.append(self)
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if not self.process.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not start (exit code {self.process.exitcode})")
        return self

    def stop(self, grace: float = 20) -> None:
        if self.process.pid is None:  # never started
            return
        self.stop_event.set()
        self.process.join(grace)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        if self in Child.live:
            Child.live.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for child in list(reversed(cls.live)):
            child.stop(grace=5)


def orphaned() -> bool:
    """In a child: has the bench died without stopping us (SIGKILL)?"""
    parent = multiprocessing.parent_process()
    return parent is not None and not parent.is_alive()


def watch_parent(stop: Event | None = None) -> None:
    """In a child: exit at once when the bench is gone without stopping us (killed), or,
    given `stop`, as soon as it is set (for children with nothing to finish)."""

    def watch() -> None:
        while not orphaned() and not (stop is not None and stop.is_set()):
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


async def wait_for_stop(stop: Event) -> None:
    """Block (in a thread) until the parent sets `stop`."""
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)


async def wait_healthy(urls: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        for url in urls:
            for _ in range(200):
                try:
                    async with session.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"{url} did not become healthy")


# --- the processes under test -------------------------------------------------------------


async def echo(message: Message, caller: MeshClaims) -> Any:
    return message.payload


async def heard(message: Message, caller: MeshClaims) -> None:
    return None


def serve_agents(
    mesh: Mesh,
    agent_ids: list[str],
    ports: list[int],
    profile: Path | None,
    ready: Event,
    stop: Event,
) -> None:
    """SDK Agents (one per port, all in this process): echo requests, take events."""

    async def main() -> None:
        sources = [mesh.tokens(agent_id) for agent_id in agent_ids]
        agents = []
        for source, port in zip(sources, ports, strict=True):
            agent = Agent("worker", ["echo"], tokens=source, host="127.0.0.1", port=port)
            agent.on_message(echo)
            agent.on_event(heard)
            agents.append(agent)
        # identity and the JWKS before serving, so the first measured call is not an exchange
        await asyncio.gather(*(source.token() for source in sources))
        await asyncio.gather(*(agent.refresh_keys() for agent in agents))
        done = asyncio.Event()
        serving = [asyncio.create_task(agent.serve(done)) for agent in agents]
        healthy = asyncio.create_task(wait_healthy([f"http://127.0.0.1:{p}" for p in ports]))
        await asyncio.wait([healthy, *serving], return_when=asyncio.FIRST_COMPLETED)
        for task in serving:
            if task.done():  # an agent that stops before it is asked to has failed
                task.result()
                raise RuntimeError("an agent stopped on its own")
        await healthy
        with profiled(profile):
            ready.set()
            await wait_for_stop(stop)
        done.set()
        await asyncio.gather(*serving, return_exceptions=True)

    logging.disable(logging.CRITICAL)  # log lines would cost time, not what is measured
    watch_parent()
    raise_fd_limit()
    asyncio.run(main())


def serve_mesh(port: int, bare_port: int, agents: int, ready: Event, stop: Event) -> None:
    """The mesh API of bench/meshserver.py (its registry holds agent-0 … agent-{agents-1}),
    run as a Child so that it, too, ends with the bench."""
    from meshserver import _serve

    watch_parent(stop)
    _serve(port, bare_port, agents, ready)


async def raw_message(request: web.Request) -> web.Response:
    """The baseline's handler: decode the envelope, answer the same envelope the Agent
    would (same fields and size), with no validation, no token and no ACL."""
    message = json.loads(await request.read())
    if message.get("type") == "event":
        return web.Response(status=202)
    reply = {
        "messageId": uuid.uuid4().hex,
        "from": message["to"],
        "to": message["from"],
        "type": "response",
        "payload": message.get("payload"),
        "timestamp": now_rfc3339(),
        "correlationId": message["messageId"],
        "metadata": {},
    }
    return web.json_response(reply)


def serve_raw(ports: list[int], profile: Path | None, ready: Event, stop: Event) -> None:
    """Bare aiohttp sites (one per port, all in this process): the baseline servers."""

    async def main() -> None:
        runners = []
        for port in ports:
            app = web.Application()
            app.router.add_post(MESSAGES, raw_message)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
        with profiled(profile):
            ready.set()
            await wait_for_stop(stop)
        for runner in runners:
            await runner.cleanup()

    logging.disable(logging.CRITICAL)
    watch_parent()
    raise_fd_limit()
    asyncio.run(main())


# --- 1. request/response -----------------------------------------------------------------


def counting(call: Call, failures: Counter[str]) -> Call:
    """`call`, with a failure counted (by kind) instead of ending the run."""

    async def counted() -> None:
        try:
            await call()
        except (MeshError, RuntimeError, aiohttp.ClientError, TimeoutError) as error:
            failures[f"{type(error).__name__}: {str(error)[:120]}"] += 1

    return counted


async def sequential(call: Call, count: int) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        out.append(time.perf_counter() - start)
    return out


async def inflight(call: Call, count: int, concurrency: int) -> float:
    """Calls per second with `concurrency` in flight, `count` calls in all."""
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - start)


async def throughput_with_cpu(
    call: Call, count: int, concurrency: int, server_pid: int
) -> dict[str, float]:
    server0, client0 = cpu_seconds(server_pid), time.process_time()
    rate = await inflight(call, count, concurrency)
    return {
        "per_second": rate,
        "server_cpu_us_per_msg": (cpu_seconds(server_pid) - server0) / count * 1e6,
        "client_cpu_us_per_msg": (time.process_time() - client0) / count * 1e6,
    }


async def exchange_tokens(mesh: Mesh, agent_id: str, count: int) -> list[str]:
    """`count` distinct mesh tokens of one agent (each exchange issues a new jti)."""
    sem = asyncio.Semaphore(16)
    body = {"namespace": mesh.namespace, "agentId": agent_id, "credential": mesh.credential}
    async with aiohttp.ClientSession() as session:

        async def one() -> str:
            async with sem, session.post(f"{mesh.url}/v1/token", json=body) as response:
                return str((await response.json())["token"])

        return list(await asyncio.gather(*(one() for _ in range(count))))


class Clients:
    """The two callers: ours (Transport with a TokenSource) and raw aiohttp."""

    def __init__(self, mesh: Mesh, ours_url: str, raw_url: str) -> None:
        self.ours_url = ours_url
        self.raw_url = raw_url + MESSAGES
        self.source = mesh.tokens(CALLER)
        self.transport = Transport(token=self.source.token)
        config = self.transport.config
        # the baseline gets the pool the Transport has per agent (DESIGN §5: 10 connections)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=config.max_connections_per_agent, keepalive_timeout=config.keepalive_seconds
            )
        )
        self.headers: dict[str, str] = {}

    async def start(self) -> None:
        token = await self.source.token()
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    async def close(self) -> None:
        await self.transport.close()
        await self.session.close()

    async def ours(self) -> None:
        message = Message.new(MessageType.REQUEST, CALLER, RECEIVER, PAYLOAD)
        await self.transport.request(self.ours_url, message)

    async def raw(self) -> None:
        message_id = uuid.uuid4().hex
        body = json.dumps(
            {
                "messageId": message_id,
                "from": CALLER,
                "to": RECEIVER,
                "type": "request",
                "payload": PAYLOAD,
                "timestamp": now_rfc3339(),
                "metadata": {},
            }
        )
        async with self.session.post(self.raw_url, data=body, headers=self.headers) as response:
            reply = json.loads(await response.read())
        if response.status != 200 or reply.get("correlationId") != message_id:
            raise RuntimeError(f"raw baseline: {response.status} {reply}")

    async def checks(self) -> dict[str, Any]:
        """That the Agent really refuses a bad token, and the sizes of both replies."""
        envelope = Message.new(MessageType.REQUEST, CALLER, RECEIVER, PAYLOAD).to_wire()
        sizes: dict[str, Any] = {}
        for name, url, token in (
            ("ours", self.ours_url + MESSAGES, self.headers["Authorization"]),
            ("raw", self.raw_url, self.headers["Authorization"]),
            ("ours, forged token", self.ours_url + MESSAGES, self.headers["Authorization"][:-4]),
        ):
            async with self.session.post(
                url, json=envelope, headers={"Authorization": token}
            ) as response:
                body = await response.read()
                sizes[name] = {"status": response.status, "reply_bytes": len(body)}
        sizes["request_bytes"] = len(json.dumps(envelope))
        if sizes["ours, forged token"]["status"] != 401:
            raise RuntimeError(f"the Agent accepted a forged token: {sizes}")
        return sizes


async def request_response(
    mesh: Mesh, agent: Child, ours_url: str, raw: Child, raw_url: str, sizes: Sizes
) -> dict[str, Any]:
    clients = Clients(mesh, ours_url, raw_url)
    await clients.start()
    try:
        checks = await clients.checks()
        servers = {"ours": agent.pid, "raw": raw.pid}
        failures: dict[str, Counter[str]] = {"ours": Counter(), "raw": Counter()}
        calls = {
            "ours": counting(clients.ours, failures["ours"]),
            "raw": counting(clients.raw, failures["raw"]),
        }
        for call in calls.values():  # warm up: connections, caches, first token verify
            await sequential(call, 300)
            await inflight(call, 1000, 64)
        for counter in failures.values():
            counter.clear()
        latencies: dict[str, list[float]] = {name: [] for name in calls}
        runs: dict[str, dict[int, list[dict[str, float]]]] = {
            name: {c: [] for c in sizes.concurrency} for name in calls
        }
        for _ in range(sizes.rounds):  # alternate, so drift hits both alike
            for name, call in calls.items():
                latencies[name] += await sequential(call, sizes.sequential)
            for concurrency in sizes.concurrency:
                for name, call in calls.items():
                    runs[name][concurrency].append(
                        await throughput_with_cpu(call, sizes.total, concurrency, servers[name])
                    )
        rows: dict[str, dict[str, Any]] = {}
        for name in calls:
            row: dict[str, Any] = {
                "p50_ms": ms(statistics.median(latencies[name])),
                "p99_ms": ms(pct(latencies[name], 0.99)),
            }
            for concurrency, samples in runs[name].items():
                for key in samples[0]:
                    row[f"{key}_{concurrency}_inflight"] = statistics.median(
                        s[key] for s in samples
                    )
            rows[name] = row

        # worst case: every message carries a token the Agent has not seen (signature
        # verified each time), as on a caller's first contact or after renewal
        count = sizes.sequential + sizes.fresh_total
        tokens = await exchange_tokens(mesh, CALLER, count)
        pool = iter(tokens)

        async def fresh_token() -> str:
            return next(pool)

        fresh = Transport(token=fresh_token)

        async def ours_fresh() -> None:
            message = Message.new(MessageType.REQUEST, CALLER, RECEIVER, PAYLOAD)
            await fresh.request(ours_url, message)

        failures["ours, new token every message"] = Counter()
        fresh_call = counting(ours_fresh, failures["ours, new token every message"])
        try:
            lat = await sequential(fresh_call, sizes.sequential)
            burst = await throughput_with_cpu(fresh_call, sizes.fresh_total, 64, agent.pid)
        finally:
            await fresh.close()
        rows["ours, new token every message"] = {
            "p50_ms": ms(statistics.median(lat)),
            "p99_ms": ms(pct(lat, 0.99)),
            **{f"{key}_64_inflight": value for key, value in burst.items()},
        }
        ours, base = rows["ours"], rows["raw"]
        ratios = {
            "p50": ours["p50_ms"] / base["p50_ms"],
            "p99": ours["p99_ms"] / base["p99_ms"],
            **{
                f"throughput_{c}_inflight": ours[f"per_second_{c}_inflight"]
                / base[f"per_second_{c}_inflight"]
                for c in sizes.concurrency
            },
        }
        return {
            "connections_per_agent": clients.transport.config.max_connections_per_agent,
            "sequential_per_round": sizes.sequential,
            "messages_per_throughput_run": sizes.total,
            "rounds": sizes.rounds,
            "checks": checks,
            "rows": rows,
            "failures": {name: dict(counter) for name, counter in failures.items() if counter},
            "ours_over_raw": ratios,
        }
    finally:
        await clients.close()


# --- 1b. where the time goes: each step of a round trip, in this process -------------------


def per_call_us(fn: Callable[[], object], seconds: float, repeats: int = 5) -> float:
    """µs per call: the best of `repeats` windows (the least disturbed by other work)."""
    best = math.inf
    for _ in range(repeats):
        done = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds / repeats:
            for _ in range(100):
                fn()
            done += 100
        best = min(best, (time.perf_counter() - start) / done)
    return best * 1e6


def step_costs(seconds: float) -> list[dict[str, Any]]:
    """µs per call of what each end does per message besides HTTP, ours next to what the
    raw baseline does instead (None: the baseline has no such step)."""
    clock = SystemClock()
    ring = KeyRing.generate("ES256", clock.now())
    token, _ = TokenIssuer(lambda: ring, clock).issue(
        AgentIdentity(CALLER, "orchestrator", "bench", (), "uid-0")
    )
    keys = PublicKeySet.from_jwks(ring.jwks())
    verifier = TokenVerifier(lambda: keys, clock, RevocationList())
    policies = PolicyIndex()
    authorization = f"Bearer {token}"
    request = Message.new(MessageType.REQUEST, CALLER, RECEIVER, PAYLOAD)
    request_bytes = json.dumps(request.to_wire()).encode()
    reply_bytes = json.dumps(request.reply(PAYLOAD).to_wire()).encode()
    raw_request = json.loads(request_bytes)

    def raw_envelope() -> str:
        return json.dumps(
            {
                "messageId": uuid.uuid4().hex,
                "from": CALLER,
                "to": RECEIVER,
                "type": "request",
                "payload": PAYLOAD,
                "timestamp": now_rfc3339(),
                "metadata": {},
            }
        )

    def raw_reply() -> str:
        return json.dumps(
            {
                "messageId": uuid.uuid4().hex,
                "from": raw_request["to"],
                "to": raw_request["from"],
                "type": "response",
                "payload": raw_request["payload"],
                "timestamp": now_rfc3339(),
                "correlationId": raw_request["messageId"],
                "metadata": {},
            }
        )

    def metrics() -> None:  # what Transport.send/_attempt record per message
        TRANSPORT_ACTIVE.inc()
        TRANSPORT_ACTIVE.dec()
        TRANSPORT_DURATION.observe(0.001)
        TRANSPORT_REQUESTS.labels(outcome="ok").inc()

    steps: list[tuple[str, str, Callable[[], object], Callable[[], object] | None]] = [
        (
            "caller",
            "build the request (Message.new, to_wire, json.dumps)",
            lambda: json.dumps(
                Message.new(MessageType.REQUEST, CALLER, RECEIVER, PAYLOAD).to_wire()
            ),
            raw_envelope,
        ),
        ("caller", "transport metrics (gauge, histogram, labelled counter)", metrics, None),
        (
            "caller",
            "parse the reply (json.loads, Message.model_validate)",
            lambda: Message.model_validate(json.loads(reply_bytes)),
            lambda: json.loads(reply_bytes),
        ),
        (
            "agent",
            "token: bearer_token + TokenVerifier.verify, cache hit",
            lambda: verifier.verify(bearer_token(authorization)),
            None,
        ),
        (
            "agent",
            "ACL: PolicyIndex.decide (cached)",
            lambda: policies.decide("orchestrator", "bench", Action.EXECUTE, "agents", "bench"),
            None,
        ),
        (
            "agent",
            "parse the request (Message.model_validate_json)",
            lambda: Message.model_validate_json(request_bytes),
            lambda: json.loads(request_bytes),
        ),
        (
            "agent",
            "build the reply (Message.reply, to_wire, json.dumps)",
            lambda: json.dumps(request.reply(PAYLOAD).to_wire()),
            raw_reply,
        ),
    ]
    verifier.verify(token)  # the first sight verifies the signature; the rest hit the cache
    rows = []
    for side, what, ours, raw in steps:
        rows.append(
            {
                "side": side,
                "step": what,
                "ours_us": per_call_us(ours, seconds),
                "raw_us": per_call_us(raw, seconds) if raw is not None else 0.0,
            }
        )
    return rows


async def one_loop_split(mesh: Mesh, count: int, rounds: int) -> dict[str, Any]:
    """CPU per round trip with both ends in this process and loop, for each pairing of
    caller (raw, Transport) and receiver (bare aiohttp, Agent): no scheduler between the
    ends, so the difference between pairings is what each side of the mesh adds. The
    best of `rounds` windows per pairing, the windows interleaved."""
    agent_port, raw_port = listen_ports(2)
    source = mesh.tokens(RECEIVER)
    await source.token()
    agent = Agent("worker", ["echo"], tokens=source, host="127.0.0.1", port=agent_port)
    agent.on_message(echo)
    await agent.refresh_keys()
    bare = web.Application()
    bare.router.add_post(MESSAGES, raw_message)
    runners = [web.AppRunner(agent.app(), access_log=None), web.AppRunner(bare, access_log=None)]
    for runner, port in zip(runners, (agent_port, raw_port), strict=True):
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    to_agent, to_raw = f"http://127.0.0.1:{agent_port}", f"http://127.0.0.1:{raw_port}"
    raw_to_raw = Clients(mesh, to_agent, to_raw)
    raw_to_agent = Clients(mesh, to_agent, to_agent)  # its raw() calls the Agent
    ours_to_raw = Clients(mesh, to_raw, to_raw)  # its ours() calls the bare server
    clients = (raw_to_raw, raw_to_agent, ours_to_raw)
    try:
        for c in clients:
            await c.start()
        pairings: dict[str, Call] = {
            "raw -> bare": raw_to_raw.raw,
            "Transport -> bare": ours_to_raw.ours,
            "raw -> Agent": raw_to_agent.raw,
            "Transport -> Agent": raw_to_raw.ours,
        }
        for call in pairings.values():
            await sequential(call, 200)
        best = dict.fromkeys(pairings, math.inf)
        for _ in range(rounds):
            for name, call in pairings.items():
                start = time.process_time()
                await sequential(call, count)
                best[name] = min(best[name], (time.process_time() - start) / count * 1e6)
    finally:
        for c in clients:
            await c.close()
        for runner in runners:
            await runner.cleanup()
    base = best["raw -> bare"]
    return {
        "cpu_us_per_round_trip": best,
        "caller_adds_us": best["Transport -> bare"] - base,
        "receiver_adds_us": best["raw -> Agent"] - base,
        "both_add_us": best["Transport -> Agent"] - base,
    }


# --- 2. broadcast ------------------------------------------------------------------------


async def broadcast(
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
        body = json.dumps(
            {
                "messageId": uuid.uuid4().hex,
                "from": CALLER,
                "to": BROADCAST,
                "type": "event",
                "payload": {"seq": seq},
                "timestamp": now_rfc3339(),
                "metadata": {},
            }
        )
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
                servers0 = sum(cpu_seconds(pid) for pid in server_pids[name])
                client0 = time.process_time()
                start = time.perf_counter()
                await once(seq)
                times[name].append(time.perf_counter() - start)
                cpu[name]["client"] += time.process_time() - client0
                cpu[name]["servers"] += (
                    sum(cpu_seconds(pid) for pid in server_pids[name]) - servers0
                )
    finally:
        await transport.close()
        await session.close()
    rows = {
        name: {
            "p50_ms": ms(statistics.median(t)),
            "p99_ms": ms(pct(t, 0.99)),
            "mean_ms": ms(statistics.fmean(t)),
            "client_cpu_ms_per_broadcast": ms(cpu[name]["client"] / count),
            "servers_cpu_ms_per_broadcast": ms(cpu[name]["servers"] / count),
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


def run_broadcast(mesh: Mesh, targets: int, procs: int, count: int) -> dict[str, Any]:
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
            broadcast(
                mesh,
                {
                    agent_id: f"http://127.0.0.1:{port}"
                    for agent_id, port in zip(ids, ports, strict=True)
                },
                [f"http://127.0.0.1:{port}{MESSAGES}" for port in raw_ports],
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


# --- 3. connections ----------------------------------------------------------------------

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(HEALTHZ)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)


def error_name(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno is not None:
        return f"{type(error).__name__} {os.strerror(error.errno)}"
    return type(error).__name__


def hold_connections(port: int, source: str, pipe: Connection, ready: Event, stop: Event) -> None:
    """Opens and holds keep-alive connections to 127.0.0.1:`port` from `source`, on the
    parent's commands: ("open", n, timeout), ("ping", timeout), ("close",)."""
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open_one(wait_s: float, errors: Counter[str], limit: asyncio.Semaphore) -> None:
        async with limit:
            if sum(errors.values()) >= 25:  # the server stopped taking them: stop trying
                return
            writer = None
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.setsockopt(socket.IPPROTO_IP, 24, 1)  # IP_BIND_ADDRESS_NO_PORT
                    sock.bind((source, 0))
                    sock.setblocking(False)
                    await asyncio.wait_for(
                        asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)),
                        wait_s,
                    )
                except BaseException:
                    sock.close()
                    raise
                reader, writer = await asyncio.open_connection(sock=sock)
                await asyncio.wait_for(roundtrip(reader, writer), wait_s)
                held.append((reader, writer))
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
                errors[error_name(error)] += 1
                if writer is not None:
                    writer.close()

    async def ping(wait_s: float) -> tuple[int, Counter[str]]:
        errors: Counter[str] = Counter()
        limit = asyncio.Semaphore(256)

        async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
            async with limit:
                try:
                    await asyncio.wait_for(roundtrip(reader, writer), wait_s)
                    return True
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
                    errors[error_name(error)] += 1
                    return False

        answered = await asyncio.gather(*(one(r, w) for r, w in held))
        return sum(answered), errors

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ready.set()
        while not stop.is_set():
            if not await loop.run_in_executor(None, pipe.poll, 0.2):
                continue
            command = pipe.recv()
            if command[0] == "open":
                errors: Counter[str] = Counter()
                limit = asyncio.Semaphore(25)
                await asyncio.gather(
                    *(open_one(command[2], errors, limit) for _ in range(command[1]))
                )
                pipe.send((len(held), dict(errors)))
            elif command[0] == "ping":
                answered, errors = await ping(command[1])
                pipe.send((answered, dict(errors)))
            else:
                break
        for _, writer in held:
            writer.close()

    watch_parent()
    raise_fd_limit()
    asyncio.run(main())


async def probe_healthz(
    kept: aiohttp.ClientSession, url: str, count: int, new_connections: bool
) -> dict[str, float]:
    """/healthz latency on a keep-alive connection open since the start, and over new
    connections (when the server can still take one)."""
    timeout = aiohttp.ClientTimeout(total=10)
    on_kept = []
    for _ in range(count):
        start = time.perf_counter()
        async with kept.get(f"{url}/healthz", timeout=timeout) as response:
            await response.read()
        on_kept.append(time.perf_counter() - start)
    out = {
        "healthz_p50_ms": ms(statistics.median(on_kept)),
        "healthz_p99_ms": ms(pct(on_kept, 0.99)),
    }
    if new_connections:
        fresh = []
        for _ in range(max(5, count // 10)):
            start = time.perf_counter()
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as one,
                one.get(f"{url}/healthz", timeout=timeout) as response,
            ):
                await response.read()
            fresh.append(time.perf_counter() - start)
        out["healthz_new_connection_p50_ms"] = ms(statistics.median(fresh))
    return out


class Holders:
    """The client processes and the share of connections each holds."""

    def __init__(self, port: int, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.children: list[Child] = []
        self.held = [0] * count
        for k in range(count):
            parent, child = ctx.Pipe()
            self.pipes.append(parent)
            # each holder its own source address: 28k ephemeral ports each, not 28k in all
            self.children.append(
                Child(f"holder {k}", hold_connections, port, f"127.0.0.{2 + k}", child)
            )

    def start(self) -> None:
        for child in self.children:
            child.start()

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("close",))
        for child in self.children:
            child.stop()

    def open(self, more: int, timeout: float) -> Counter[str]:
        """Spread `more` new connections over the holders with room; the errors seen."""
        plan = [0] * len(self.children)
        for k in range(len(plan)):
            plan[k] = min(PER_HOLDER - self.held[k], more - sum(plan))
        for pipe, n in zip(self.pipes, plan, strict=True):
            if n > 0:
                pipe.send(("open", n, timeout))
        errors: Counter[str] = Counter()
        for k, (pipe, n) in enumerate(zip(self.pipes, plan, strict=True)):
            if n > 0:
                self.held[k], seen = pipe.recv()
                errors.update(seen)
        return errors

    def ping(self, timeout: float) -> tuple[int, Counter[str]]:
        for pipe in self.pipes:
            pipe.send(("ping", timeout))
        answered, errors = 0, Counter[str]()
        for pipe in self.pipes:
            n, seen = pipe.recv()
            answered += n
            errors.update(seen)
        return answered, errors


async def grow_connections(
    agent: Child, holders: Holders, url: str, targets: list[int], overshoot: bool, probes: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    fd_limit = fd_hard_limit()  # what the Agent process raised its own limit to
    # the probe's own connection is opened first and kept (idle between steps)
    connector = aiohttp.TCPConnector(limit=1, keepalive_timeout=3600)
    async with aiohttp.ClientSession(connector=connector) as kept:
        await probe_healthz(kept, url, probes, True)  # warm up
        base_rss = rss_bytes(agent.pid)
        base = {"connections": 0, "server_rss_mb": base_rss / 2**20}
        base.update(await probe_healthz(kept, url, probes, True))
        rows: list[dict[str, Any]] = [base]
        for target in targets:
            last = overshoot and target == targets[-1]
            start = time.perf_counter()
            errors = await asyncio.to_thread(
                holders.open, target - sum(holders.held), 3.0 if last else 10.0
            )
            opened_in = time.perf_counter() - start
            held = sum(holders.held)
            start = time.perf_counter()
            answered, ping_errors = await asyncio.to_thread(holders.ping, 10.0)
            sweep = time.perf_counter() - start
            rss = rss_bytes(agent.pid)
            row: dict[str, Any] = {
                "target": target,
                "connections": held,
                "open_errors": dict(errors),
                "opened_in_s": opened_in,
                "all_answered": answered == held,
                "answered": answered,
                "ping_errors": dict(ping_errors),
                "sweep_s": sweep,
                "server_rss_mb": rss / 2**20,
                "server_rss_kib_per_connection": (rss - base_rss) / max(held, 1) / 1024,
                "server_open_fds": open_fds(agent.pid),
            }
            try:
                row.update(await probe_healthz(kept, url, probes, not last))
            except (aiohttp.ClientError, TimeoutError) as error:
                row["healthz_error"] = error_name(error)
            rows.append(row)
            if held < target:
                return rows, {
                    "at_connections": held,
                    "server_open_fds": row["server_open_fds"],
                    "server_fd_limit": fd_limit,
                    "open_errors": dict(errors),
                    "reason": (
                        "the server process's RLIMIT_NOFILE (its hard limit)"
                        if row["server_open_fds"] >= fd_limit - 2
                        else "see open_errors"
                    ),
                }
    return rows, {}


def run_connections(mesh: Mesh, steps: list[int], overshoot: bool, probes: int) -> dict[str, Any]:
    (port,) = listen_ports(1)
    fd_limit = fd_hard_limit()
    # past the fd limit on purpose (with overshoot): to see what refuses first
    targets = [*steps, fd_limit + 500] if overshoot else list(steps)
    agent = Child("connections agent", serve_agents, mesh, [RECEIVER], [port], None)
    holders = Holders(port, math.ceil(targets[-1] / PER_HOLDER))
    try:
        agent.start()
        holders.start()
        rows, stopped_by = asyncio.run(
            grow_connections(agent, holders, f"http://127.0.0.1:{port}", targets, overshoot, probes)
        )
    finally:
        holders.stop()
        agent.stop()
    return {
        "fd_limit": fd_limit,
        "holder_processes": len(holders.children),
        "rows": rows,
        "highest_held": max(r["connections"] for r in rows),
        "stopped_by": stopped_by or None,
    }


# --- profile -----------------------------------------------------------------------------


def own_times(path: Path) -> dict[str, tuple[int, float]]:
    """Function → (calls, own time in s) from a cProfile dump; idle waits left out."""
    entries: dict[Any, Any] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    out: dict[str, tuple[int, float]] = {}
    for (filename, line, function), (_, calls, tottime, _, _) in entries.items():
        if "poll' of 'select" in function:
            continue  # the event loop waiting for the other side
        where = "/".join(Path(filename).parts[-2:]) if filename != "~" else ""
        out[f"{where}:{line}({function})"] = (calls, tottime)
    return out


def profile_diff(ours: Path, raw: Path, messages: int, count: int) -> dict[str, Any]:
    """Own time per message under cProfile, ours against raw, largest differences first.
    cProfile inflates small calls: read the ranking and the shares, not the µs."""
    a, b = own_times(ours), own_times(raw)
    rows: list[dict[str, Any]] = []
    for function in set(a) | set(b):
        calls, mine = a.get(function, (0, 0.0))
        base_calls, theirs = b.get(function, (0, 0.0))
        rows.append(
            {
                "function": function,
                "ours_calls_per_msg": calls / messages,
                "raw_calls_per_msg": base_calls / messages,
                "ours_us": mine / messages * 1e6,
                "raw_us": theirs / messages * 1e6,
                "extra_us": (mine - theirs) / messages * 1e6,
            }
        )
    rows.sort(key=lambda r: r["extra_us"], reverse=True)
    return {
        "ours_total_us": sum(t for _, t in a.values()) / messages * 1e6,
        "raw_total_us": sum(t for _, t in b.values()) / messages * 1e6,
        "largest_extra": rows[:count],
    }


async def drive_profiled(mesh: Mesh, url: str, name: str, count: int, out: Path) -> None:
    clients = Clients(mesh, url, url)
    await clients.start()
    call = clients.ours if name == "ours" else clients.raw
    try:
        await sequential(call, 200)  # the server's profile includes these; the client's not
        with profiled(out):
            await sequential(call, count // 2)
            await inflight(call, count // 2, 64)
    finally:
        await clients.close()


def run_profile(mesh: Mesh, count: int) -> dict[str, Any]:
    """Both ends of ours and of raw under cProfile (separate runs, not the measured ones)."""
    RESULTS.mkdir(exist_ok=True)
    for name in ("ours", "raw"):
        (port,) = listen_ports(1)
        server_prof = RESULTS / f"transport_profile_{name}_server.prof"
        client_prof = RESULTS / f"transport_profile_{name}_client.prof"
        if name == "ours":
            server = Child("profiled agent", serve_agents, mesh, [RECEIVER], [port], server_prof)
        else:
            server = Child("profiled raw", serve_raw, [port], server_prof)
        try:
            server.start()
            asyncio.run(drive_profiled(mesh, f"http://127.0.0.1:{port}", name, count, client_prof))
        finally:
            server.stop()
    server_messages = count + 200  # the servers' profiles include the warm-up
    return {
        "messages": count,
        "server": profile_diff(
            RESULTS / "transport_profile_ours_server.prof",
            RESULTS / "transport_profile_raw_server.prof",
            server_messages,
            40,
        ),
        "client": profile_diff(
            RESULTS / "transport_profile_ours_client.prof",
            RESULTS / "transport_profile_raw_client.prof",
            count,
            40,
        ),
    }


# --- main --------------------------------------------------------------------------------


class Sizes:
    """How much of everything: full sizes (~4 min), or --quick (a smoke run, ~30 s)."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.sequential = 300 if quick else 2000
        self.total = 2000 if quick else 10_000
        self.fresh_total = 1000 if quick else 4000
        self.rounds = 1 if quick else 3
        self.concurrency = (16, 64)
        self.split_count = 300 if quick else 1000
        self.split_rounds = 3 if quick else 9
        self.broadcasts = 10 if quick else 100
        self.connection_steps = [500, 1000, 2000] if quick else [1000, 2500, 5000, 10_000, 15_000]
        self.overshoot = not quick
        self.probes = 50 if quick else 200
        self.profile_messages = 2000 if quick else 6000


def cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_tables(result: dict[str, Any]) -> None:
    rr = result.get("request_response")
    if rr:
        print(f"request/response, one Agent ({rr['connections_per_agent']} connections per agent)")
        print(
            f"{'':<32} {'p50 ms':>7} {'p99 ms':>7} {'msg/s@16':>9} {'msg/s@64':>9}"
            f" {'srv µs/msg':>10} {'cli µs/msg':>10}"
        )
        for name, row in rr["rows"].items():
            print(
                f"{name:<32} {row['p50_ms']:>7.3f} {row['p99_ms']:>7.3f} "
                f"{cell(row.get('per_second_16_inflight'), ',.0f'):>9}"
                f" {row['per_second_64_inflight']:>9,.0f}"
                f" {row['server_cpu_us_per_msg_64_inflight']:>10.0f}"
                f" {row['client_cpu_us_per_msg_64_inflight']:>10.0f}"
            )
        for name, seen in rr["failures"].items():
            print(f"failed calls, {name}: {seen}")
        r = rr["ours_over_raw"]
        print(
            f"ours / raw: p50 x{r['p50']:.2f}, p99 x{r['p99']:.2f}, throughput @16"
            f" x{r['throughput_16_inflight']:.2f}, @64 x{r['throughput_64_inflight']:.2f}"
        )
        print()
    steps = result.get("step_costs")
    if steps:
        print("per message, besides HTTP (in-process, µs per call)")
        print(f"{'':<6} {'step':<58} {'ours':>6} {'raw':>6}")
        for row in steps:
            print(
                f"{row['side']:<6} {row['step']:<58} {row['ours_us']:>6.1f} {row['raw_us']:>6.1f}"
            )
        extra = sum(r["ours_us"] - r["raw_us"] for r in steps)
        print(f"ours - raw, both ends together: {extra:.0f} µs per round trip")
        print()
    split = result.get("one_loop_split")
    if split:
        print("CPU per round trip, both ends in one process and loop (best window, µs)")
        for name, us in split["cpu_us_per_round_trip"].items():
            print(f"  {name:<20} {us:>6.0f}")
        print(
            f"the Transport as caller adds {split['caller_adds_us']:.0f} µs, the Agent as"
            f" receiver {split['receiver_adds_us']:.0f} µs, both {split['both_add_us']:.0f} µs"
        )
        print()
    bc = result.get("broadcast")
    if bc:
        print(
            f"broadcast of an event to {bc['targets']} agents in {bc['server_processes']}"
            f" processes, {bc['broadcasts']} broadcasts"
        )
        print(
            f"{'':<8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'client CPU ms':>14}"
            f" {'servers CPU ms':>15}"
        )
        for name, row in bc["rows"].items():
            print(
                f"{name:<8} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['mean_ms']:>8.2f}"
                f" {row['client_cpu_ms_per_broadcast']:>14.2f}"
                f" {row['servers_cpu_ms_per_broadcast']:>15.2f}"
            )
        r = bc["ours_over_raw"]
        print(f"ours / raw: p50 x{r['p50']:.2f}, p99 x{r['p99']:.2f}")
        if bc["failed_deliveries"]:
            print(f"failed deliveries: {bc['failed_deliveries']}")
        print()
    cn = result.get("connections")
    if cn:
        print(
            f"keep-alive connections held by one Agent process (fd limit {cn['fd_limit']},"
            f" {cn['holder_processes']} client processes)"
        )
        print(
            f"{'held':>7} {'all answer':>10} {'sweep s':>8} {'RSS MiB':>8} {'KiB/conn':>9}"
            f" {'healthz p50':>12} {'p99':>7} {'new conn':>9}"
        )
        for row in cn["rows"]:
            print(
                f"{row['connections']:>7,} {row.get('all_answered', '-')!s:>10}"
                f" {row.get('sweep_s', 0):>8.2f} {row['server_rss_mb']:>8.1f}"
                f" {cell(row.get('server_rss_kib_per_connection'), '.1f'):>9}"
                f" {cell(row.get('healthz_p50_ms'), '.3f'):>12}"
                f" {cell(row.get('healthz_p99_ms'), '.3f'):>7}"
                f" {cell(row.get('healthz_new_connection_p50_ms'), '.3f'):>9}"
            )
        print(f"highest held: {cn['highest_held']:,}; stopped by: {cn['stopped_by']}")
        print()
    prof = result.get("profile")
    if prof:
        for side, title in (("client", "caller (Transport)"), ("server", "agent (SDK Agent)")):
            diff = prof[side]
            print(
                f"profile, {title}: own time per message under cProfile, ours"
                f" {diff['ours_total_us']:.0f} µs, raw {diff['raw_total_us']:.0f} µs;"
                " largest differences:"
            )
            print(f"  {'extra µs':>8} {'calls':>6}  function")
            for row in diff["largest_extra"][:15]:
                extra, calls = row["extra_us"], row["ours_calls_per_msg"]
                print(f"  {extra:>8.1f} {calls:>6.1f}  {row['function']}")
            print()


def main() -> int:
    # here, not at the top: the children re-import this module and need none of the mesh
    from meshserver import CREDENTIAL, NAMESPACE

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (~30 s)")
    parser.add_argument(
        "--only",
        default="rr,broadcast,connections",
        help="comma-separated subset of rr, broadcast, connections",
    )
    parser.add_argument("--profile", action="store_true", help="also profile both ends (rr)")
    parser.add_argument("--targets", type=int, default=100, help="broadcast targets")
    parser.add_argument(
        "--broadcast-procs", type=int, default=2, help="processes hosting the broadcast targets"
    )
    args = parser.parse_args()
    sizes = Sizes(args.quick)
    parts = set(args.only.split(","))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    result: dict[str, Any] = {
        "benchmark": "transport",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "versions": {"aiohttp": aiohttp.__version__},
        "quick": args.quick,
        "transport_config": {
            "max_connections_per_agent": TransportConfig().max_connections_per_agent,
            "keepalive_seconds": TransportConfig().keepalive_seconds,
        },
    }
    started, busy0, own0 = time.monotonic(), machine_busy_seconds(), own_seconds()
    if "rr" in parts:
        result["step_costs"] = step_costs(0.1 if args.quick else 0.5)
    mesh_port, bare_port = listen_ports(2)  # meshserver's bare endpoint is not used here
    mesh = Mesh(f"http://127.0.0.1:{mesh_port}", NAMESPACE, CREDENTIAL)
    try:
        Child("mesh API", serve_mesh, mesh_port, bare_port, args.targets + 1).start()
        if "rr" in parts:
            agent_port, raw_port = listen_ports(2)
            agent = Child("agent", serve_agents, mesh, [RECEIVER], [agent_port], None)
            raw = Child("raw server", serve_raw, [raw_port], None)
            try:
                agent.start()
                raw.start()
                result["request_response"] = asyncio.run(
                    request_response(
                        mesh,
                        agent,
                        f"http://127.0.0.1:{agent_port}",
                        raw,
                        f"http://127.0.0.1:{raw_port}",
                        sizes,
                    )
                )
            finally:
                agent.stop()
                raw.stop()
            result["one_loop_split"] = asyncio.run(
                one_loop_split(mesh, sizes.split_count, sizes.split_rounds)
            )
        if "broadcast" in parts:
            result["broadcast"] = run_broadcast(
                mesh, args.targets, args.broadcast_procs, sizes.broadcasts
            )
        if "connections" in parts:
            result["connections"] = run_connections(
                mesh, sizes.connection_steps, sizes.overshoot, sizes.probes
            )
        if args.profile:
            result["profile"] = run_profile(mesh, sizes.profile_messages)
    finally:
        Child.stop_all()
    elapsed = time.monotonic() - started
    others = max(0.0, machine_busy_seconds() - busy0 - (own_seconds() - own0))
    result["other_processes_cpu_share"] = others / (elapsed * (os.cpu_count() or 1))
    print_tables(result)
    print(
        f"other processes used {result['other_processes_cpu_share']:.0%} of the machine's"
        " CPU time during the run"
        + (": the figures are disturbed" if result["other_processes_cpu_share"] > 0.05 else "")
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transport.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'transport.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
