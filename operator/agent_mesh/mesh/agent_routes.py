"""Routes about one agent, callable only with that agent's own token."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from pydantic import Field

from agent_mesh.mesh.http import parse_body
from agent_mesh.mesh.identity_routes import AUTHORITY, WireModel


class Heartbeat(WireModel):
    """What an agent reports on each beat."""

    active_tasks: int = Field(0, ge=0, le=1_000_000)
    version: str | None = Field(None, max_length=128)


@dataclass(slots=True)
class Beat:
    at: dt.datetime
    active_tasks: int
    version: str | None


HEARTBEATS: Final = web.AppKey("heartbeats", dict)
"""(namespace, agentId) → last Beat: the in-memory record health is computed from."""


async def heartbeat(request: web.Request) -> web.Response:
    authority = request.app[AUTHORITY]
    namespace, agent_id = request.match_info["namespace"], request.match_info["agent_id"]
    claims = await authority.authenticate(request.headers.get("Authorization"))
    authority.require_self(claims, namespace, agent_id)
    beat = await parse_body(request, Heartbeat)
    request.app[HEARTBEATS][(namespace, agent_id)] = Beat(
        authority.clock.now(), beat.active_tasks, beat.version
    )
    return web.json_response({"accepted": True})


def add_routes(app: web.Application) -> None:
    app[HEARTBEATS] = {}
    app.router.add_post("/v1/agents/{namespace}/{agent_id}/heartbeat", heartbeat)
