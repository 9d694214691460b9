"""The loopback pieces the benchmarks assemble: ports, URLs, waiting for an endpoint,
serving an aiohttp app, the mesh API's token exchange, and echo_worker agent processes
(run by agent_mesh.testing, as the tests and the demo run them). Light to import: an
agent process of a bench imports this, never the mesh server nor the harness."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from agent_mesh.auth.tokens import GRANT_TOKEN_EXCHANGE
from agent_mesh.devcluster.ports import free_port
from agent_mesh.sdk.identity import TokenSource

from .children import Started, adopt, wait_for_stop
from .profiling import profiled

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
CREDENTIAL = "bench-credential"  # of every agent common.meshserver registers
NAMESPACE = "bench"

__all__ = ["free_port"]


def local_url(port: int, scheme: str = "http") -> str:
    return f"{scheme}://{HOST}:{port}"


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
                sock.bind((HOST, candidate))
                ports.append(candidate)
            except OSError:
                pass
        candidate += 1
    return ports


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy (OSError, KeyError and ValueError
    count as not yet); RuntimeError naming `what` at the deadline."""
    from agent_mesh.testing import wait_until as until  # here: keeps this module light

    def tolerant() -> Any:
        with contextlib.suppress(OSError, KeyError, ValueError):
            return check()
        return None

    return until(what, tolerant, timeout, interval)


async def wait_healthy(urls: Iterable[str], seconds: float = 10.0) -> None:
    """Until GET {url}/healthz answers 200, for each of `urls` (RuntimeError after
    `seconds` for one)."""
    async with aiohttp.ClientSession() as session:
        for url in urls:
            deadline = time.monotonic() + seconds
            while True:
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with session.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} did not become healthy")
                await asyncio.sleep(0.05)


async def serve_app(app: web.Application, port: int) -> web.AppRunner:
    """`app` served on 127.0.0.1:`port` without an access log; its runner (cleanup())."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    return runner


def post_app(path: str, handler: Handler) -> web.Application:
    """An aiohttp app with one route, POST `path`, and nothing else (no middleware)."""
    app = web.Application()
    app.router.add_post(path, handler)
    return app


async def serve_until_stopped(
    apps: list[tuple[web.Application, int]],
    ready: Event,
    stop: Event,
    profile: Path | None = None,
) -> None:
    """In a children.Child: serve each (app, port), set `ready`, wait until the bench sets
    `stop` (cProfiled into `profile` meanwhile, if given), then clean up."""
    runners = [await serve_app(app, port) for app, port in apps]
    with profiled(profile):
        ready.set()
        await wait_for_stop(stop)
    for runner in runners:
        await runner.cleanup()


@dataclass(frozen=True, slots=True)
class Mesh:
    """Where the mesh API runs and how its agents prove who they are (a value a child
    process can be given)."""

    url: str
    namespace: str
    credential: str
    ca_file: str | None = None
    """The CA bundle that verifies an https mesh API."""

    def tokens(self, agent_id: str) -> TokenSource:
        """The SDK's token source for `agent_id` (credential exchange, renewal)."""
        return TokenSource(
            self.url,
            namespace=self.namespace,
            agent_id=agent_id,
            credential=self.credential,
            ca_file=self.ca_file,
        )

    async def exchange(self, session: aiohttp.ClientSession, agent_id: str) -> str:
        """One POST /v1/token: a new mesh token (a new jti) for `agent_id`."""
        body = {"namespace": self.namespace, "agentId": agent_id, "credential": self.credential}
        tls = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
        async with session.post(f"{self.url}/v1/token", json=body, ssl=tls) as response:
            if response.status != 200:
                raise RuntimeError(f"token for {agent_id}: HTTP {response.status}")
            return str((await response.json())["token"])

    async def recipient_tokens(
        self, agent_id: str, recipients: list[str], concurrency: int = 16
    ) -> list[str]:
        """Tokens of `agent_id` addressed to each of `recipients` (agentIds here; a repeat
        gets a new jti), by token exchange as MeshClient gets them: what agents accept."""
        sem = asyncio.Semaphore(concurrency)
        tls = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
        async with aiohttp.ClientSession() as session:
            subject = await self.exchange(session, agent_id)

            async def one(recipient: str) -> str:
                body = {
                    "grantType": GRANT_TOKEN_EXCHANGE,
                    "subjectToken": subject,
                    "audience": f"{self.namespace}/{recipient}",
                }
                async with (
                    sem,
                    session.post(f"{self.url}/v1/token", json=body, ssl=tls) as response,
                ):
                    if response.status != 200:
                        raise RuntimeError(f"token for {recipient}: HTTP {response.status}")
                    return str((await response.json())["accessToken"])

            return list(await asyncio.gather(*(one(r) for r in recipients)))

    async def exchange_all(self, agent_ids: list[str], concurrency: int = 16) -> list[str]:
        """A token for each of `agent_ids` (in order), `concurrency` exchanges at once."""
        sem = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession() as session:

            async def one(agent_id: str) -> str:
                async with sem:
                    return await self.exchange(session, agent_id)

            return list(await asyncio.gather(*(one(a) for a in agent_ids)))


def start_echo_worker(
    mesh: Mesh,
    agent_id: str,
    url: str,
    slots: int,
    log_dir: Path,
    env: dict[str, str] | None = None,
) -> Started:
    """examples/echo_worker.py as agent `agent_id` serving `url`, started by
    agent_mesh.testing as the tests start it; its output in {log_dir}/{agent_id}.log."""
    from agent_mesh.testing import launch_agent  # here: keeps this module light

    agent = launch_agent(
        "echo_worker.py",
        mesh_url=mesh.url,
        ca_file=mesh.ca_file,
        namespace=mesh.namespace,
        agent_id=agent_id,
        credential=mesh.credential,
        url=url,
        log=log_dir / f"{agent_id}.log",
        settings={
            "AGENT_MESH_HEARTBEAT_SECONDS": "5",
            "AGENT_MESH_MAX_CONCURRENT_TASKS": str(slots),
            "AGENT_MESH_LOG_FORMAT": "text",
            **(env or {}),
        },
    )
    return adopt(agent_id, agent.process, agent.log)


def wait_ready(workers: dict[str, Started], timeout: float = 60) -> None:
    """Until GET {url}/readyz answers 200 for each url → worker; RuntimeError (with the
    log's tail) when a worker exits first."""
    from agent_mesh.testing import answers

    for url, worker in workers.items():

        def ready(u: str = url, w: Started = worker) -> bool:
            if w.exited():
                raise RuntimeError(f"agent {w.name} exited:\n{w.tail()}")
            return answers(f"{u}/readyz")

        wait_until(f"agent {worker.name} to be ready", ready, timeout, 0.1)
