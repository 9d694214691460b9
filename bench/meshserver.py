"""The mesh API with in-memory state, served from a process of its own, so a benchmark's
load generator and the server do not share an event loop or a core."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from multiprocessing.synchronize import Event
from typing import Any

from aiohttp import web

from agent_mesh.auth.audit import AuditLog
from agent_mesh.auth.authority import Authority, AuthSettings, credential_hash
from agent_mesh.auth.memory import (
    MemoryKeyStore,
    MemoryRevocationStore,
    StaticTokenReviewer,
    registry_fetcher,
)
from agent_mesh.domain.acl import PolicyIndex
from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.clock import SystemClock
from agent_mesh.domain.health import HealthTracker
from agent_mesh.health_monitor import HealthMonitor
from agent_mesh.mesh.server import create_app
from agent_mesh.ports import free_port

CREDENTIAL = "bench-credential"
NAMESPACE = "bench"


def agent(i: int) -> AgentRecord:
    return AgentRecord(
        NAMESPACE,
        f"agent-{i}",
        f"uid-{i}",
        f"agent-{i}",
        "worker" if i % 10 else "orchestrator",
        ("summarize",) if i % 2 else ("review", "summarize"),
        None,
        credential_hash(CREDENTIAL),
        True,
    )


async def noop(_: web.Request) -> web.Response:
    return web.json_response({"accepted": True})


def _serve(port: int, bare_port: int, agents: int, ready: Event) -> None:
    async def main() -> None:
        clock = SystemClock()
        registry = AgentRegistry()
        for i in range(agents):
            registry.upsert(agent(i))
        authority = Authority(
            AuthSettings(audit_allowed=False),
            registry=registry,
            policies=PolicyIndex(),
            keys=MemoryKeyStore(),
            revocation_store=MemoryRevocationStore(),
            reviewer=StaticTokenReviewer(),
            fetch_agent=registry_fetcher(registry),
            audit=AuditLog(),
            clock=clock,
        )
        await authority.start()
        monitor = HealthMonitor(HealthTracker(), registry, None, None, clock)
        app = create_app(authority, monitor, monitor.tracker)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        bare = web.Application()  # the baseline: aiohttp with no middleware, no auth
        bare.router.add_post("/noop", noop)
        bare_runner = web.AppRunner(bare, access_log=None)
        await bare_runner.setup()
        await web.TCPSite(bare_runner, "127.0.0.1", bare_port).start()
        ready.set()
        await asyncio.Event().wait()

    logging.disable(logging.CRITICAL)  # log lines would cost time, not what is measured
    asyncio.run(main())


class ServerProcess:
    """`with ServerProcess(port, agents):` runs the mesh API on `port` and a bare aiohttp
    no-op endpoint (POST /noop) on `bare_port`, in one process, until the block ends."""

    def __init__(self, port: int, agents: int = 1, bare_port: int | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._ready = ctx.Event()
        self.bare_port = bare_port or free_port()
        self._process = ctx.Process(
            target=_serve, args=(port, self.bare_port, agents, self._ready), daemon=True
        )

    def __enter__(self) -> ServerProcess:
        self._process.start()
        if not self._ready.wait(60):
            self._process.terminate()
            raise RuntimeError("the mesh API server did not start")
        return self

    def __exit__(self, *_: Any) -> None:
        self._process.terminate()
        self._process.join()
