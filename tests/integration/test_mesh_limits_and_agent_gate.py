"""Abuse limits and the agent's fail-closed gate against a real operator and apiserver:
429 on token exchange over a (low) configured limit, 400 for a deeply nested body with no
traceback, an SDK agent answering 503 until its first sync, and a running agent refusing a
token whose signing key has passed its retire time.

The operator here is this module's own (own namespace family), configured with a low
per-agent token limit and a short key overlap."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from kubernetes import client

from agent_mesh.devcluster.ports import free_port
from agent_mesh.domain.clock import parse_rfc3339
from agent_mesh.sdk.agent import Agent, TaskContext
from agent_mesh.sdk.identity import TokenSource
from agent_mesh.testing import OperatorProcess, credential_of
from tests.support.cluster import Cluster
from tests.support.mesh_api import (
    call,
    error_of,
    exchange,
    external_agent,
    token_for_agent,
    token_of,
    token_source,
)
from tests.support.namespaces import family, namespace_fixture
from tests.support.operators import own_operator_fixture
from tests.support.waiting import wait_for_async

LIMITS_FAMILY = family("aml")
KEY_OVERLAP_SECONDS = 6


limited_operator = own_operator_fixture(
    LIMITS_FAMILY,
    {
        "AGENT_MESH_TOKEN_EXCHANGE_BURST_PER_AGENT": "3",
        "AGENT_MESH_TOKEN_EXCHANGE_RATE_PER_AGENT": "0.05",
        "AGENT_MESH_KEY_CHECK_SECONDS": "0.5",
        "AGENT_MESH_KEY_OVERLAP_SECONDS": str(KEY_OVERLAP_SECONDS),
    },
)


own_namespace = namespace_fixture(LIMITS_FAMILY)


# --- the operator's limits -------------------------------------------------------------


def test_token_exchange_over_the_configured_per_agent_limit_gets_429_with_retry_after(
    cluster: Cluster, limited_operator: OperatorProcess, own_namespace: str
) -> None:
    credential = external_agent(cluster, own_namespace, "greedy", "worker")
    throttled_before = _throttled(limited_operator)
    for _ in range(3):
        assert exchange(limited_operator, own_namespace, "greedy", credential).status_code == 200
    refused = exchange(limited_operator, own_namespace, "greedy", credential)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    error = error_of(refused)
    assert error["code"] == "RateLimited"
    assert f"agent {own_namespace}/greedy" in error["message"]
    # another agent from the same address is not affected
    other = external_agent(cluster, own_namespace, "modest", "worker")
    assert exchange(limited_operator, own_namespace, "modest", other).status_code == 200
    # the one refusal is counted (the series exists from import: its increase is the proof)
    assert _throttled(limited_operator) == throttled_before + 1


def _throttled(operator: OperatorProcess) -> float:
    """agentmesh_mesh_requests_throttled_total for the per-agent token-exchange limit."""
    series = 'agentmesh_mesh_requests_throttled_total{limit="token-exchange-per-agent"}'
    for line in call(operator, "GET", "/metrics", None).text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_deeply_nested_body_gets_400_and_leaves_no_traceback_in_the_operator_log(
    cluster: Cluster, limited_operator: OperatorProcess, own_namespace: str
) -> None:
    token = token_of(cluster, limited_operator, own_namespace, "nester", "worker")
    for path, bearer in (("/v1/token", None), ("/v1/revocations", token)):
        response = call(limited_operator, "POST", path, bearer, content=b"[" * 100_000)
        assert response.status_code == 400, (path, response.text)
        error = error_of(response)
        assert (error["code"], error["field"]) == ("JsonTooDeep", "body")
    assert call(limited_operator, "GET", "/healthz", None).status_code == 200
    log = limited_operator.logs()
    assert "RecursionError" not in log
    assert "Traceback" not in log


# --- the SDK agent's gate --------------------------------------------------------------


class Relay:
    """A loopback TCP relay to the operator's mesh API that can be cut: while cut, every
    connection is closed at once (the operator looks down to the agent behind it)."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 443
        self._scheme = parts.scheme
        self.open = False
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{self._scheme}://127.0.0.1:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(self._host, self._port)
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pipe = asyncio.create_task(_pump(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            sink.close()


@contextlib.asynccontextmanager
async def serving(agent: Agent, port: int) -> AsyncIterator[str]:
    """Run `agent` until the block ends; yields its URL once it listens (ready or not)."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.serve(stop))
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=5) as http:

        async def serving() -> bool:
            if task.done():
                task.result()  # the agent failed to start: its error, not a timeout
            with contextlib.suppress(httpx.TransportError):
                return (await http.get(f"{url}/healthz")).status_code == 200
            return False

        await wait_for_async(f"the agent at {url} to serve", serving, within=10, interval=0.05)
    try:
        yield url
    finally:
        stop.set()
        await task


def _echo_agent(tokens: TokenSource, port: int) -> Agent:
    agent = Agent(
        "worker", ["echo"], tokens=tokens, host="127.0.0.1", port=port, policy_sync_seconds=0.5
    )

    @agent.task("echo")
    async def echo(payload: Any, ctx: TaskContext) -> Any:
        return {"echo": payload}

    return agent


def _agent_and_caller(
    cluster: Cluster, operator: OperatorProcess, namespace: str, agent_id: str
) -> tuple[int, str, str]:
    """A free port, the credential of worker `agent_id` registered at it, and what a caller
    sends that agent: an orchestrator's token addressed to it alone."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    credential = external_agent(cluster, namespace, agent_id, "worker", endpoint=endpoint)
    boss = token_of(cluster, operator, namespace, "boss", "orchestrator")
    return port, credential, token_for_agent(operator, boss, namespace, agent_id)


async def _post_task(url: str, token: str) -> httpx.Response:
    body = {"taskUid": uuid.uuid4().hex, "attempt": 1, "taskType": "echo", "payload": "hi"}
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            f"{url}/v1/tasks", json=body, headers={"Authorization": f"Bearer {token}"}
        )


async def _wait_ready(url: str) -> None:
    async def ready() -> bool:
        async with httpx.AsyncClient(timeout=5) as http:
            return (await http.get(f"{url}/readyz")).status_code == 200

    await wait_for_async(f"the agent at {url} to be ready", ready)


async def test_an_agent_answers_503_until_its_first_sync_and_serves_once_loaded(
    cluster: Cluster, limited_operator: OperatorProcess, own_namespace: str
) -> None:
    port, credential, boss = _agent_and_caller(cluster, limited_operator, own_namespace, "gated")
    relay = Relay(limited_operator.mesh_url)  # cut: the agent cannot reach the mesh yet
    await relay.start()
    tokens = token_source(limited_operator, own_namespace, "gated", credential, url=relay.url)
    try:
        async with serving(_echo_agent(tokens, port), port) as url:
            refused = await _post_task(url, boss)  # a valid token, and still refused
            assert refused.status_code == 503, refused.text
            assert int(refused.headers["Retry-After"]) >= 1
            assert refused.json()["error"]["code"] == "GateNotReady"
            async with httpx.AsyncClient(timeout=5) as http:
                ready = await http.get(f"{url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["loaded"] is False
            relay.open = True
            await _wait_ready(url)
            served = await _post_task(url, boss)
            assert served.status_code == 200, served.text
            assert served.json()["result"] == {"echo": "hi"}
    finally:
        await relay.stop()


def _retire_time(operator: OperatorProcess, kid: str) -> dt.datetime | None:
    keys = call(operator, "GET", "/.well-known/jwks.json", None).json()["keys"]
    entry = next((k for k in keys if k["kid"] == kid), None)
    return None if entry is None else parse_rfc3339(entry.get("retireAt"))


async def test_a_running_agent_refuses_a_token_whose_key_passed_its_retire_time(
    cluster: Cluster, limited_operator: OperatorProcess, own_namespace: str
) -> None:
    port, credential, boss = _agent_and_caller(cluster, limited_operator, own_namespace, "rotating")
    old_kid = jwt.get_unverified_header(boss)["kid"]
    tokens = token_source(limited_operator, own_namespace, "rotating", credential)
    async with serving(_echo_agent(tokens, port), port) as url:
        await _wait_ready(url)
        assert (await _post_task(url, boss)).status_code == 200
        client.CoreV1Api(cluster.api).patch_namespaced_secret(
            "agent-mesh-signing-keys",
            limited_operator.operator_namespace,
            {"metadata": {"annotations": {"agentmesh.io/rotate": uuid.uuid4().hex}}},
        )
        retire = await wait_for_async(
            "the old key to carry a retirement time",
            lambda: _retire_time(limited_operator, old_kid),
        )
        assert retire - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=KEY_OVERLAP_SECONDS)
        # within the overlap the running agent still accepts the old key
        assert (await _post_task(url, boss)).status_code == 200
        await wait_for_async(
            "the old key's retire time to pass",
            lambda: dt.datetime.now(dt.UTC) > retire,
            within=KEY_OVERLAP_SECONDS + 5,
        )
        refused = await _post_task(url, boss)  # the token itself is valid for minutes more
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "UnknownKey"
        # the same agent, without a restart, takes tokens signed by the new key
        renewed = exchange(
            limited_operator, own_namespace, "boss", credential_of(cluster, own_namespace, "boss")
        )
        fresh = token_for_agent(
            limited_operator, renewed.json()["token"], own_namespace, "rotating"
        )
        assert jwt.get_unverified_header(fresh)["kid"] != old_kid
        assert (await _post_task(url, fresh)).status_code == 200
