"""Agent routes: an agent's own heartbeat, and discovery queries."""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from typing import Annotated, Final, Protocol

from aiohttp import web
from pydantic import Field

from agent_mesh.api.common import NAME_MAX_LENGTH, NAME_PATTERN, URL_MAX_LENGTH, is_dns_label
from agent_mesh.api.meshagent import ENDPOINT_PATTERN
from agent_mesh.domain.acl import MeshCall
from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.clock import rfc3339
from agent_mesh.domain.discovery import AgentQuery, AgentView, discover, view_of
from agent_mesh.domain.egress import reported_endpoint_refusal
from agent_mesh.domain.errors import NotFoundError, ValidationError
from agent_mesh.domain.health import HealthStatus, HealthTracker
from agent_mesh.mesh.http import parse_body
from agent_mesh.mesh.identity_routes import AUTHORITY, StrictModel

MAX_CAPABILITIES_PER_QUERY: Final = 16
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
_NAME = re.compile(NAME_PATTERN)
logger = logging.getLogger("agent_mesh.health")


class Heartbeat(StrictModel):
    """What an agent reports on each beat."""

    active_tasks: int = Field(0, ge=0, le=1_000_000)
    version: str | None = Field(None, max_length=128)
    endpoint: Annotated[str, Field(pattern=ENDPOINT_PATTERN, max_length=URL_MAX_LENGTH)] | None = (
        None
    )


class HeartbeatSink(Protocol):
    def beat(
        self, record: AgentRecord, active_tasks: int, version: str | None, endpoint: str | None
    ) -> None: ...


HEALTH: Final = web.AppKey("health", HeartbeatSink)
IGNORED: Final = web.AppKey("ignored_endpoints", OrderedDict[tuple[str, str], None])
MAX_IGNORED: Final = 10_000
TRACKER: Final = web.AppKey("tracker", HealthTracker)
REGISTRY: Final = web.AppKey("registry", AgentRegistry)


async def heartbeat(request: web.Request) -> web.Response:
    authority = request.app[AUTHORITY]
    namespace, agent_id = request.match_info["namespace"], request.match_info["agent_id"]
    claims = await authority.authenticate(request.headers.get("Authorization"))
    authority.require_self(claims, namespace, agent_id)
    beat = await parse_body(request, Heartbeat)
    record = authority.registry.get(namespace, agent_id)
    if record is None:  # deleted between authentication and now
        raise NotFoundError(f"agent {namespace}/{agent_id} is not registered", field="agentId")
    endpoint: str | None = beat.endpoint
    answer: dict[str, object] = {"accepted": True}
    if endpoint is not None and not (record.endpoint and endpoint == record.endpoint):
        # a reported endpoint is the caller's word: used only when it is spec.endpoint or
        # the agent's own pod IP, else the operator would dial wherever a token holder says
        refused = reported_endpoint_refusal(endpoint, record.endpoint, authority.pod_ip_of(claims))
        if refused is not None:
            ignored = request.app[IGNORED]
            if (record.ref, endpoint) not in ignored:  # once, not on every beat
                ignored[(record.ref, endpoint)] = None
                while len(ignored) > MAX_IGNORED:
                    ignored.popitem(last=False)
                logger.warning("agent %s: reported endpoint not used: %s", record.ref, refused)
            endpoint, answer = None, {"accepted": True, "endpointIgnored": refused}
    request.app[HEALTH].beat(record, beat.active_tasks, beat.version, endpoint)
    return web.json_response(answer)


def _query(request: web.Request, default_namespace: str) -> AgentQuery:
    q = request.query
    namespace = q.get("namespace", default_namespace)
    if not is_dns_label(namespace):
        raise ValidationError(f"namespace {namespace!r} is not a namespace name", field="namespace")
    capabilities = tuple(c for raw in q.getall("capability", []) for c in raw.split(",") if c)
    if len(capabilities) > MAX_CAPABILITIES_PER_QUERY:
        raise ValidationError(
            f"at most {MAX_CAPABILITIES_PER_QUERY} capabilities per query", field="capability"
        )
    for capability in capabilities:
        if len(capability) > NAME_MAX_LENGTH or not _NAME.match(capability):
            raise ValidationError(
                f"capability {capability!r} is not a capability name", field="capability"
            )
    agent_type = q.get("type")
    if agent_type is not None and not is_dns_label(agent_type):
        raise ValidationError(f"type {agent_type!r} is not an agent type", field="type")
    health = q.get("health")
    if health is not None and health not in HealthStatus._value2member_map_:
        raise ValidationError(
            f"health must be one of {', '.join(h.value for h in HealthStatus)}", field="health"
        )
    return AgentQuery(namespace, capabilities, agent_type, HealthStatus(health) if health else None)


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValidationError(f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
    return int(raw)


async def list_agents(request: web.Request) -> web.Response:
    """`GET /v1/agents?capability=a&capability=b&type=&health=&namespace=&limit=` (read
    agents). At most `limit` (default 100) matches; `truncated` says there were more."""
    authority = request.app[AUTHORITY]
    claims = await authority.authenticate(request.headers.get("Authorization"))
    query = _query(request, claims.namespace)
    limit = _limit(request)
    authority.authorize(claims, MeshCall.DISCOVER_AGENTS, query.namespace)
    views = discover(request.app[REGISTRY], request.app[TRACKER], query, limit)
    truncated = len(views) > limit
    return web.json_response(
        {"truncated": truncated, "items": [_wire(v) for v in views[:limit]]},
        headers={"Cache-Control": "private, max-age=60"},
    )


async def get_agent(request: web.Request) -> web.Response:
    """`GET /v1/agents/{namespace}/{agentId}` (read agents): one agent, as discovery
    reports it; how a client finds the endpoint of an agent it knows by id."""
    authority = request.app[AUTHORITY]
    namespace, agent_id = request.match_info["namespace"], request.match_info["agent_id"]
    claims = await authority.authenticate(request.headers.get("Authorization"))
    authority.authorize(claims, MeshCall.DISCOVER_AGENTS, namespace)
    record = request.app[REGISTRY].get(namespace, agent_id)
    if record is None:
        raise NotFoundError(f"agent {namespace}/{agent_id} is not registered", field="agentId")
    view = view_of(record, request.app[TRACKER])
    return web.json_response(_wire(view), headers={"Cache-Control": "private, max-age=60"})


def _wire(v: AgentView) -> dict[str, object]:
    return {
        "agentId": v.record.agent_id,
        "namespace": v.record.namespace,
        "agentType": v.record.agent_type,
        "capabilities": list(v.record.capabilities),
        "health": v.health.value,
        "lastSeen": rfc3339(v.last_seen) if v.last_seen else None,
        "activeTasks": v.active_tasks,
        "maxConcurrentTasks": v.record.max_concurrent_tasks,
        "endpoint": v.endpoint,
        "version": v.record.version,
    }


def add_routes(
    app: web.Application, health: HeartbeatSink, registry: AgentRegistry, tracker: HealthTracker
) -> None:
    app[HEALTH] = health
    app[IGNORED] = OrderedDict()
    app[REGISTRY] = registry
    app[TRACKER] = tracker
    app.router.add_post("/v1/agents/{namespace}/{agent_id}/heartbeat", heartbeat)
    app.router.add_get("/v1/agents", list_agents)
    app.router.add_get("/v1/agents/{namespace}/{agent_id}", get_agent)
