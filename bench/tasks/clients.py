"""The tasks bench's clients of the apiserver, each a process of its own (a
children.Child that sends its figures back on a pipe): the watcher, the creator and the
request sender."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Any

import aiohttp

from common.load import closed_loop

from .apiserver import GROUP, VERSION, ApiServer

FINAL = frozenset({"Completed", "Failed", "TimedOut"})
NO_STATUS = "-"


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


def send_result(out: Connection, work: Coroutine[Any, Any, dict[str, Any]]) -> None:
    """Run `work` and send its figures on `out`, with the CPU time this process spent."""
    started = time.process_time()
    result = asyncio.run(work)
    result["cpu_s"] = time.process_time() - started
    out.send(result)


def watcher(
    api: ApiServer,
    namespace: str,
    prefix: str,
    expected: Synchronized[int],
    done_phases: frozenset[str],
    timeout: float,
    linger: float,
    out: Connection,
    ready: Event,
    stop: Event,
) -> None:
    """A children.Child target: `watch`, its Seen records sent on `out`."""

    async def work() -> dict[str, Any]:
        seen = await watch(api, namespace, prefix, expected, done_phases, timeout, linger, ready)
        return {"seen": {k: vars(v) for k, v in seen.items()}}

    send_result(out, work())


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


@dataclass(frozen=True)
class Creation:
    """What the creator makes: `count` MeshTasks named `prefix`000000… with `spec` (and a
    payload of their own) in `namespace`, `concurrency` requests in flight (closed loop)
    or at `rate` per second (open loop, at most `concurrency` in flight)."""

    namespace: str
    prefix: str
    count: int
    concurrency: int
    rate: float | None
    spec: dict[str, Any]


def creator(api: ApiServer, creation: Creation, out: Connection, ready: Event, stop: Event) -> None:
    """A children.Child target: `create`, its figures sent on `out`."""
    ready.set()
    send_result(out, create(api, creation))


async def create(api: ApiServer, creation: Creation) -> dict[str, Any]:
    """Create the tasks: when each POST was sent and answered, errors, names that failed."""
    namespace, prefix, count = creation.namespace, creation.prefix, creation.count
    concurrency, rate, spec = creation.concurrency, creation.rate, creation.spec
    url = api.tasks_url(namespace)
    sent = [0.0] * count
    acked = [0.0] * count
    errors: collections.Counter[str] = collections.Counter()
    failed: list[str] = []
    start = time.monotonic() + 0.05
    connector = aiohttp.TCPConnector(ssl=api.ssl_context(), limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(i: int) -> None:
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

        await closed_loop(post, count, concurrency)
    return {"sent": sent, "acked": acked, "errors": dict(errors), "failed": failed}


def sender(
    api: ApiServer,
    requests: list[tuple[str, str, str]],
    concurrency: int,
    out: Connection,
    ready: Event,
    stop: Event,
) -> None:
    """A children.Child target: `send_all`, its figures sent on `out`."""
    ready.set()
    send_result(out, send_all(api, requests, concurrency))


async def send_all(
    api: ApiServer, requests: list[tuple[str, str, str]], concurrency: int
) -> dict[str, Any]:
    """(method, path, JSON body) each, `concurrency` in flight; merge patches for PATCH."""
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    connector = aiohttp.TCPConnector(ssl=api.ssl_context(), limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(i: int) -> None:
            method, path, body = requests[i]
            kind = "application/merge-patch+json" if method == "PATCH" else "application/json"
            t = time.monotonic()
            async with session.request(
                method, f"{api.server}{path}", data=body, headers={"Content-Type": kind}
            ) as r:
                await r.read()
                if r.status >= 300:
                    errors[str(r.status)] += 1
            latencies.append(time.monotonic() - t)

        seconds = await closed_loop(send, len(requests), concurrency)
    return {"seconds": seconds, "latencies": latencies, "errors": dict(errors)}
