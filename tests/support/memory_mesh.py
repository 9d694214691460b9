"""The operator's mesh API in memory, served on loopback: the real Authority and routes
over the in-memory stores (auth/memory.py). For unit tests of the mesh API's limits and
of the SDK's gate, which need an operator to talk to but not a cluster."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from agent_mesh.auth.audit import AuditLog
from agent_mesh.auth.authority import Authority, AuthSettings, credential_hash
from agent_mesh.auth.memory import (
    MemoryKeyStore,
    MemoryRevocationStore,
    StaticTokenReviewer,
    registry_fetcher,
)
from agent_mesh.auth.tokens import GRANT_TOKEN_EXCHANGE
from agent_mesh.coordinator import Coordinator
from agent_mesh.coordinator.dispatch import AgentTransport
from agent_mesh.domain.acl import PolicyIndex
from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.clock import Clock, FakeClock
from agent_mesh.domain.health import HealthTracker
from agent_mesh.health.monitor import HealthMonitor
from agent_mesh.mesh.fastpath import FastPath
from agent_mesh.mesh.limits import AbuseGuard, AbuseLimits
from agent_mesh.mesh.server import DEFAULT_MAX_BODY_BYTES, create_app
from agent_mesh.sdk.identity import TokenSource

CREDENTIAL = "s3cret-credential"


def agent_record(agent_id: str, agent_type: str, namespace: str = "ns", **kw: Any) -> AgentRecord:
    """An external agent offering summarize, whose credential is CREDENTIAL."""
    fields: dict[str, Any] = {
        "namespace": namespace,
        "name": agent_id,
        "uid": f"uid-{agent_id}",
        "agent_id": agent_id,
        "agent_type": agent_type,
        "capabilities": ("summarize",),
        "service_account": None,
        "credential_hash": credential_hash(CREDENTIAL),
        "external": True,
    }
    fields.update(kw)
    return AgentRecord(**fields)


@dataclass
class MemoryMesh:
    client: TestClient  # type: ignore[type-arg]
    authority: Authority
    registry: AgentRegistry
    keys: MemoryKeyStore
    reviewer: StaticTokenReviewer
    clock: FakeClock
    audit: AuditLog
    monitor: HealthMonitor

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def exchange(self, agent_id: str, namespace: str = "ns", **extra: Any) -> Any:
        body = {"namespace": namespace, "agentId": agent_id, "credential": CREDENTIAL, **extra}
        return await self.client.post("/v1/token", json=body)

    async def token(self, agent_id: str, namespace: str = "ns", to: str | None = None) -> str:
        """`agent_id`'s mesh-API token; with `to` (`<namespace>/<agentId>`), the token it
        sends that agent, exchanged as MeshClient does."""
        response = await self.exchange(agent_id, namespace)
        assert response.status == 200, await response.text()
        token = str((await response.json())["token"])
        if to is None:
            return token
        body = {"grantType": GRANT_TOKEN_EXCHANGE, "subjectToken": token, "audience": to}
        exchanged = await self.client.post("/v1/token", json=body)
        assert exchanged.status == 200, await exchanged.text()
        return str((await exchanged.json())["accessToken"])

    def tokens(self, agent_id: str, namespace: str = "ns") -> TokenSource:
        """What an agent holds: a TokenSource exchanging its credential with this mesh."""
        return TokenSource(self.url, namespace=namespace, agent_id=agent_id, credential=CREDENTIAL)


async def memory_authority(
    registry: AgentRegistry,
    clock: Clock,
    audit: AuditLog,
    *,
    settings: AuthSettings | None = None,
    policies: PolicyIndex | None = None,
    keys: MemoryKeyStore | None = None,
    revocations: MemoryRevocationStore | None = None,
    reviewer: StaticTokenReviewer | None = None,
) -> Authority:
    """The real Authority over in-memory stores (auth/memory.py), started: the agents of
    `registry`, policies, signing keys, revocations and TokenReview answers of the test's
    own (new and empty where not given)."""
    authority = Authority(
        settings or AuthSettings(),
        registry=registry,
        policies=policies or PolicyIndex(),
        keys=keys or MemoryKeyStore(),
        revocation_store=revocations or MemoryRevocationStore(),
        reviewer=reviewer or StaticTokenReviewer(),
        fetch_agent=registry_fetcher(registry),
        audit=audit,
        clock=clock,
    )
    await authority.start()
    return authority


async def start_memory_mesh(
    agents: Iterable[AgentRecord],
    *,
    limits: AbuseLimits | None = None,
    ticks: Callable[[], float] | None = None,
    max_json_depth: int = 64,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    settings: AuthSettings | None = None,
    whole_second: bool = True,
) -> MemoryMesh:
    """Serve it on 127.0.0.1; with `limits`, an AbuseGuard on the monotonic `ticks`. Its
    clock starts now, on a whole second unless not `whole_second` (then a revocation at
    the start covers what was issued a moment before it)."""
    now = dt.datetime.now(dt.UTC)
    clock = FakeClock(now.replace(microsecond=0) if whole_second else now)
    registry = AgentRegistry()
    for agent in agents:
        registry.upsert(agent)
    reviewer = StaticTokenReviewer()
    keys = MemoryKeyStore()
    audit = AuditLog(clock=clock)
    authority = await memory_authority(
        registry, clock, audit, settings=settings, keys=keys, reviewer=reviewer
    )
    monitor = HealthMonitor(HealthTracker(), registry, None, None, clock)
    guard = None
    if limits is not None:
        guard = AbuseGuard(limits, audit, ticks) if ticks else AbuseGuard(limits, audit)
    app = create_app(
        authority,
        monitor,
        monitor.tracker,
        max_body_bytes,
        guard=guard,
        max_json_depth=max_json_depth,
    )
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return MemoryMesh(client, authority, registry, keys, reviewer, clock, audit, monitor)


def memory_mesh_fixture(agents: Callable[[], Iterable[AgentRecord]], **options: Any) -> Any:
    """A pytest fixture, for a module to name: start_memory_mesh(agents(), **options) for
    each test, closed after it."""

    @pytest.fixture
    async def fixture() -> AsyncIterator[MemoryMesh]:
        mesh = await start_memory_mesh(agents(), **options)
        yield mesh
        await mesh.client.close()

    return fixture


async def error_body(response: ClientResponse) -> dict[str, Any]:
    """The `error` of a refusal's JSON body, which holds nothing else."""
    body = await response.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def fast_path_served(
    authority: Authority,
    agents: Iterable[AgentRecord],
    fast_path: Callable[[Coordinator], FastPath],
    *,
    transport: AgentTransport | None = None,
    max_body_bytes: int = 1 << 20,
) -> AsyncIterator[tuple[TestClient, FastPath]]:  # type: ignore[type-arg]
    """The mesh API with the fast path, served on 127.0.0.1 over `authority` (memory_authority):
    a Coordinator that has seen `agents` and dispatches through `transport` (default: its
    own), running, and the FastPath `fast_path` builds on it; closed after the block."""
    monitor = HealthMonitor(HealthTracker(), authority.registry, None, None, authority.clock)
    coordinator = Coordinator(
        registry=authority.registry,
        tracker=monitor.tracker,
        authority=authority,
        audit=authority.audit,
        clock=authority.clock,
        transport=transport,
    )
    for record in agents:
        coordinator.agent_seen(record)
    fast = fast_path(coordinator)
    app = create_app(authority, monitor, monitor.tracker, max_body_bytes, fast_path=fast)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    running = asyncio.create_task(coordinator.run())
    try:
        yield client, fast
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await client.close()
        await fast.close()
        await coordinator.close()
