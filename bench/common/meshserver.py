"""The operator's mesh API on in-memory state (an `Authority` with the in-memory stores, a
registry of agents that prove themselves with one credential), for a benchmark to serve
from a process of its own, so its load generator and the server do not share an event
loop or a core.

Heavy to import (the operator's mesh application): import it only where it is served or
its records are built, never at the top of a module an agent process imports."""

from __future__ import annotations

import asyncio
from multiprocessing.synchronize import Event

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
from agent_mesh.domain.clock import Clock, SystemClock
from agent_mesh.domain.health import HealthStatus, HealthTracker
from agent_mesh.health.monitor import HealthMonitor
from agent_mesh.mesh.server import create_app

from .harness import CREDENTIAL, NAMESPACE, post_app, serve_until_stopped

__all__ = ["CREDENTIAL", "NAMESPACE", "agent", "authority", "fleet", "record", "serve"]


def record(
    agent_id: str,
    agent_type: str,
    capabilities: tuple[str, ...],
    *,
    name: str | None = None,
    uid: str | None = None,
    endpoint: str | None = None,
    health: HealthStatus | None = None,
    slots: int = 10,
) -> AgentRecord:
    """An external agent of namespace NAMESPACE that proves itself with CREDENTIAL."""
    return AgentRecord(
        namespace=NAMESPACE,
        name=name or agent_id,
        uid=uid or f"uid-{agent_id}",
        agent_id=agent_id,
        agent_type=agent_type,
        capabilities=capabilities,
        service_account=None,
        credential_hash=credential_hash(CREDENTIAL),
        external=True,
        endpoint=endpoint,
        health=health,
        max_concurrent_tasks=slots,
    )


def agent(i: int) -> AgentRecord:
    """agent-`i` of the numbered fleet: every tenth an orchestrator (agent-0 is one), the
    rest workers; odd ones summarize, even ones also review."""
    return record(
        f"agent-{i}",
        "worker" if i % 10 else "orchestrator",
        ("summarize",) if i % 2 else ("review", "summarize"),
        name=f"agent-{i}",  # its own string, as when read from a MeshAgent
        uid=f"uid-{i}",
    )


def fleet(agents: int) -> AgentRegistry:
    """A registry holding agent-0 … agent-{agents-1}."""
    registry = AgentRegistry()
    for i in range(agents):
        registry.upsert(agent(i))
    return registry


async def authority(
    registry: AgentRegistry, clock: Clock, audit: AuditLog, settings: AuthSettings
) -> Authority:
    """A started Authority over `registry` with in-memory keys, revocations and
    policies."""
    auth = Authority(
        settings,
        registry=registry,
        policies=PolicyIndex(),
        keys=MemoryKeyStore(),
        revocation_store=MemoryRevocationStore(),
        reviewer=StaticTokenReviewer(),
        fetch_agent=registry_fetcher(registry),
        audit=audit,
        clock=clock,
    )
    await auth.start()
    return auth


async def noop(_: web.Request) -> web.Response:
    return web.json_response({"accepted": True})


def serve(port: int, bare_port: int, agents: int, ready: Event, stop: Event) -> None:
    """A children.Child target: the mesh API on `port` (registry: agent-0 …
    agent-{agents-1}) and, for a baseline, a bare aiohttp app with POST /noop (no
    middleware, no auth) on `bare_port`, until `stop`."""

    async def main() -> None:
        clock = SystemClock()
        registry = fleet(agents)
        auth = await authority(registry, clock, AuditLog(), AuthSettings(audit_allowed=False))
        monitor = HealthMonitor(HealthTracker(), registry, None, None, clock)
        mesh = create_app(auth, monitor, monitor.tracker)
        bare = post_app("/noop", noop)
        await serve_until_stopped([(mesh, port), (bare, bare_port)], ready, stop)

    asyncio.run(main())
