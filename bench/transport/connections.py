"""Connections: one Agent process holding idle keep-alive connections opened by client
processes (each from its own 127.0.0.x source address so ephemeral ports do not run out),
grown in steps; at each step every held connection must answer again, and the Agent's
RSS per connection and /healthz latency are recorded. With `overshoot` the last step asks
for more than the fd limit, to show what stops it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections import Counter
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

import aiohttp

from common.children import SPAWN, Child
from common.harness import Mesh, listen_ports, local_url
from common.load import sequential
from common.output import Column, table
from common.procfs import fd_hard_limit, open_fds, raise_fd_limit, rss_bytes
from common.stats import percentile, summary

from .parts import RECEIVER, error_name, serve_agents

PER_HOLDER = 5000  # connections one client process holds at most
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
HoldErrors = (OSError, TimeoutError, asyncio.IncompleteReadError)


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


def hold_connections(port: int, source: str, pipe: Connection, ready: Event, stop: Event) -> None:
    """A children.Child target: opens and holds keep-alive connections to
    127.0.0.1:`port` from `source`, on the parent's commands: ("open", n, timeout),
    ("ping", timeout), ("close",)."""
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
            except HoldErrors as error:
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
                except HoldErrors as error:
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

    raise_fd_limit()
    asyncio.run(main())


async def probe_healthz(
    kept: aiohttp.ClientSession, url: str, count: int, new_connections: bool
) -> dict[str, float]:
    """/healthz latency on a keep-alive connection open since the start, and over new
    connections (when the server can still take one)."""
    timeout = aiohttp.ClientTimeout(total=10)

    async def on_kept() -> None:
        async with kept.get(f"{url}/healthz", timeout=timeout) as response:
            await response.read()

    async def on_new() -> None:
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as one,
            one.get(f"{url}/healthz", timeout=timeout) as response,
        ):
            await response.read()

    out = summary(await sequential(on_kept, count), scale=1000, prefix="healthz_", suffix="_ms")
    if new_connections:
        fresh = await sequential(on_new, max(5, count // 10))
        out["healthz_new_connection_p50_ms"] = percentile(fresh, 0.5) * 1000
    return out


class Holders:
    """The client processes and the share of connections each holds."""

    def __init__(self, port: int, count: int) -> None:
        self.pipes: list[Connection] = []
        self.children: list[Child] = []
        self.held = [0] * count
        for k in range(count):
            parent, child = SPAWN.Pipe()
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


async def grow(
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


def run(mesh: Mesh, steps: list[int], overshoot: bool, probes: int) -> dict[str, Any]:
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
            grow(agent, holders, local_url(port), targets, overshoot, probes)
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


def report(cn: dict[str, Any]) -> None:
    ms = ".3f"
    print(
        table(
            [
                Column("held", 7, ",", "connections"),
                Column("all answer", 10, key="all_answered"),
                Column("sweep s", 8, ".2f", lambda row: row.get("sweep_s", 0)),
                Column("RSS MiB", 8, ".1f", "server_rss_mb"),
                Column("KiB/conn", 9, ".1f", "server_rss_kib_per_connection"),
                Column("healthz p50", 12, ms, "healthz_p50_ms"),
                Column("p99", 7, ms, "healthz_p99_ms"),
                Column("new conn", 9, ms, "healthz_new_connection_p50_ms"),
            ],
            cn["rows"],
            f"keep-alive connections held by one Agent process (fd limit {cn['fd_limit']},"
            f" {cn['holder_processes']} client processes)",
        )
    )
    print(f"highest held: {cn['highest_held']:,}; stopped by: {cn['stopped_by']}")
    print()
