"""The headscale client against a loopback stand-in of headscale's REST API: a device is
removed only while it still has the agent's name; a missing one is `absent`; a failing or
unreachable server is a ControlServerError naming the call (the operator logs it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from agent_mesh.config import OperatorConfig
from agent_mesh.devcluster.ports import free_port
from agent_mesh.transport.control_server import ControlServerError, Headscale, Removal

KEY = "hskey-test"


@pytest.fixture
async def headscale() -> AsyncIterator[tuple[str, dict[str, str], list[str]]]:
    nodes = {"7": "agent-mesh-prod-summ", "8": "someone-else"}
    deleted: list[str] = []

    def node_of(request: web.Request) -> str:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            raise web.HTTPUnauthorized(text="Unauthorized")
        node = request.match_info["id"]
        if node == "500":
            raise web.HTTPInternalServerError(text="database is locked")
        if node not in nodes:
            raise web.HTTPNotFound(text="node not found")
        return node

    async def get(request: web.Request) -> web.Response:
        node = node_of(request)
        return web.json_response({"node": {"id": node, "name": nodes[node]}})

    async def delete(request: web.Request) -> web.Response:
        node = node_of(request)
        deleted.append(nodes.pop(node))
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/v1/node/{id}", get)
    app.router.add_delete("/api/v1/node/{id}", delete)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")), nodes, deleted
    await server.close()


async def test_removes_only_a_device_that_still_has_the_agents_name(
    headscale: tuple[str, dict[str, str], list[str]],
) -> None:
    url, nodes, deleted = headscale
    control = Headscale(url, KEY)
    try:
        assert await control.remove_device("8", "agent-mesh-prod-summ") is Removal.NOT_OURS
        assert await control.remove_device("7", "agent-mesh-prod-summ") is Removal.REMOVED
        assert await control.remove_device("7", "agent-mesh-prod-summ") is Removal.ABSENT
    finally:
        await control.close()
    assert deleted == ["agent-mesh-prod-summ"]
    assert nodes == {"8": "someone-else"}


async def test_failures_are_errors_naming_the_call(
    headscale: tuple[str, dict[str, str], list[str]],
) -> None:
    url, _, _ = headscale
    control = Headscale(url, KEY)
    wrong_key = Headscale(url, "not-the-key")
    unreachable = Headscale(f"http://127.0.0.1:{free_port()}", KEY)
    try:
        with pytest.raises(ControlServerError, match=r"GET .*/api/v1/node/500: 500 .*locked"):
            await control.remove_device("500", "x")
        with pytest.raises(ControlServerError, match="401"):
            await wrong_key.remove_device("7", "agent-mesh-prod-summ")
        with pytest.raises(ControlServerError, match="/api/v1/node/7"):
            await unreachable.remove_device("7", "agent-mesh-prod-summ")
    finally:
        for client in (control, wrong_key, unreachable):
            await client.close()


def test_api_key_needs_the_login_server() -> None:
    with pytest.raises(ValidationError, match="AGENT_MESH_TAILSCALE_LOGIN_SERVER"):
        OperatorConfig(headscale_api_key="k")
    assert OperatorConfig().control_server() is None
    configured = OperatorConfig(headscale_api_key="k", tailscale_login_server="http://127.0.0.1:8")
    assert isinstance(configured.control_server(), Headscale)
