"""The mesh API application and its server lifecycle (inside the operator's event loop)."""

from __future__ import annotations

import logging
import ssl

from aiohttp import web

from agent_mesh.auth.authority import Authority
from agent_mesh.domain.health import HealthTracker
from agent_mesh.domain.jsondepth import DEFAULT_MAX_DEPTH
from agent_mesh.mesh import agent_routes, identity_routes, task_routes
from agent_mesh.mesh.agent_routes import HeartbeatSink
from agent_mesh.mesh.fastpath import FastPath
from agent_mesh.mesh.http import MAX_BODY_KEY, MAX_DEPTH_KEY, errors_as_json
from agent_mesh.mesh.limits import GUARD, AbuseGuard
from agent_mesh.observability.metrics import exposition
from agent_mesh.transport.metrics import REGISTRY as TRANSPORT_REGISTRY

logger = logging.getLogger("agent_mesh.mesh")
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if not request.app[identity_routes.AUTHORITY].ready:
        return web.json_response({"status": "starting"}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(_: web.Request) -> web.Response:
    body, content_type = exposition(TRANSPORT_REGISTRY)  # the operator's and its transport's
    return web.Response(body=body, headers={"Content-Type": content_type})


def create_app(
    authority: Authority,
    health: HeartbeatSink,
    tracker: HealthTracker,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    fast_path: FastPath | None = None,
    guard: AbuseGuard | None = None,
    max_json_depth: int = DEFAULT_MAX_DEPTH,
) -> web.Application:
    """The mesh API with every route; `max_body_bytes` bounds any request body (413),
    `max_json_depth` its nesting (400). The task routes need the coordinator, through
    `fast_path`; without it (tools and tests that serve identity and discovery only) they
    are not served. With a `guard`, its abuse limits apply (429); without, none do."""
    app = web.Application(client_max_size=max_body_bytes, middlewares=[errors_as_json])
    app[MAX_BODY_KEY] = max_body_bytes
    app[MAX_DEPTH_KEY] = max_json_depth
    if guard is not None:
        app[GUARD] = guard
        authority.issue_limit = guard.token_issue
    app[identity_routes.AUTHORITY] = authority
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    identity_routes.add_routes(app)
    agent_routes.add_routes(app, health, authority.registry, tracker)
    if fast_path is not None:
        task_routes.add_routes(app, fast_path)
    return app


class MeshServer:
    """Runs the mesh API on host:port until stopped; over TLS with `ssl_context` (whose
    certificate may be replaced while it serves: new connections get the new one)."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, ssl_context=self.ssl_context, reuse_address=True
        )
        await site.start()
        scheme = "https" if self.ssl_context is not None else "http"
        logger.info("mesh API listening on %s://%s:%d", scheme, self.host, self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()
