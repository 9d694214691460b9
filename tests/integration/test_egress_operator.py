"""Outbound requests of the real operator (its own process, the real apiserver): callback
URLs that reach inside are refused when the task is submitted (`POST /v1/tasks`), a
redirecting callback target is not followed, spec.endpoint at the metadata address is
refused by admission, and with loopback off (as in a cluster) a name resolving to
127.0.0.1 is refused and a loopback spec.endpoint is reported in its status.

Nothing here is sent anywhere but to loopback listeners of the test's own: the refused
URLs are refused before any task runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes import client

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.testing import OperatorProcess
from tests.support.cluster import Cluster
from tests.support.mesh_api import apply_agent, call, error_of, token_of
from tests.support.namespaces import (
    TEST_NAMESPACE_PREFIX,
    ensure_namespace,
    family,
    namespace_fixture,
)
from tests.support.operators import own_operator_fixture
from tests.support.waiting import wait_for

METADATA = "169.254.169.254"


@pytest.fixture(scope="module")
def namespace(cluster: Cluster, operator: OperatorProcess) -> str:
    return ensure_namespace(cluster, f"{TEST_NAMESPACE_PREFIX}egress-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def submitter(cluster: Cluster, operator: OperatorProcess, namespace: str) -> str:
    return token_of(cluster, operator, namespace, "conductor", "orchestrator")


@pytest.mark.parametrize(
    "url",
    [
        "http://2852039166/latest",  # decimal integer
        "http://0xa9fea9fe/latest",  # hex
        "http://0251.0376.0251.0376/latest",  # octal
        f"http://[::ffff:{METADATA}]/latest",  # IPv4-mapped IPv6
        f"http://{METADATA}/latest",
        "http://example.com//169.254.169.254/latest",  # a path that would become the host
    ],
)
def test_callback_urls_reaching_internal_addresses_are_refused_at_submission(
    operator: OperatorProcess, submitter: str, url: str
) -> None:
    task = {"taskType": "echo", "payload": 1, "requiredCapabilities": ["none"], "wait": False}
    response = call(operator, "POST", "/v1/tasks", submitter, json={**task, "callbackUrl": url})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["field"] == "callbackUrl"
    assert METADATA in error["message"] or "'//'" in error["message"], error


@dataclass
class Hook:
    url: str
    received: list[str] = field(default_factory=list)


@pytest.fixture
async def hooks() -> AsyncIterator[tuple[Hook, Hook]]:
    """Two loopback servers: the first answers every request with a 307 to the second."""
    second = Hook("")
    first = Hook("")

    async def stolen(request: web.Request) -> web.Response:
        second.received.append(request.path)
        return web.Response(status=204)

    async def redirect(request: web.Request) -> web.Response:
        first.received.append(request.path)
        return web.Response(status=307, headers={"Location": f"{second.url}/stolen"})

    servers = []
    for hook, handler in ((second, stolen), (first, redirect)):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        hook.url = f"http://127.0.0.1:{server.port}"
    yield first, second
    for server in servers:
        await server.close()


async def test_a_redirecting_callback_target_is_not_followed(
    operator: OperatorProcess, submitter: str, hooks: tuple[Hook, Hook]
) -> None:
    first, second = hooks
    # no agent has the capability: the task is withdrawn after its 1 s budget, and ends
    task = {
        "taskType": "echo",
        "payload": 1,
        "requiredCapabilities": [f"nobody-{uuid.uuid4().hex[:6]}"],
        "timeoutSeconds": 1,
        "retries": 0,
        "wait": False,
        "callbackUrl": f"{first.url}/hook",
    }
    response = await asyncio.to_thread(call, operator, "POST", "/v1/tasks", submitter, json=task)
    assert response.status_code == 202, response.text
    key = response.json()["id"]

    logged = f"callback for task {key} to {first.url} failed (307)"
    # the servers run on this loop: wait in a thread
    await asyncio.to_thread(wait_for, "the refused callback", lambda: logged in operator.logs())
    assert first.received == ["/hook"]
    assert second.received == []


def test_spec_endpoint_at_the_metadata_address_is_refused_by_admission(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    with pytest.raises(client.ApiException) as refused:
        apply_agent(cluster, namespace, "metadata", "worker", endpoint=f"http://{METADATA}/latest")
    assert refused.value.status in (400, 422)
    assert (
        f"spec.endpoint 'http://{METADATA}/latest' is refused: {METADATA} is a cloud metadata "
        "service address"
    ) in str(refused.value.body)
    with pytest.raises(client.ApiException) as shorthand:
        apply_agent(cluster, namespace, "decimal", "worker", endpoint="http://2852039166/")
    assert f"numeric shorthand for {METADATA}" in str(shorthand.value.body)


# --- an operator with loopback refused, as in a cluster ------------------------------------

STRICT_FAMILY = family("ame")
NO_LOOPBACK = {"AGENT_MESH_EGRESS_ALLOW_LOOPBACK": "false"}


@dataclass
class Strict:
    operator: OperatorProcess
    namespace: str


strict_operator = own_operator_fixture(STRICT_FAMILY, NO_LOOPBACK)
strict_namespace = namespace_fixture(STRICT_FAMILY, scope="module")


@pytest.fixture(scope="module")
def strict(strict_operator: OperatorProcess, strict_namespace: str) -> Strict:
    return Strict(strict_operator, strict_namespace)


def test_with_loopback_off_a_callback_name_resolving_to_loopback_is_refused(
    cluster: Cluster, strict: Strict
) -> None:
    token = token_of(cluster, strict.operator, strict.namespace, "conductor", "orchestrator")
    task = {"taskType": "echo", "payload": 1, "requiredCapabilities": ["none"], "wait": False}
    body = {**task, "callbackUrl": "http://localhost:9/hook"}
    response = call(strict.operator, "POST", "/v1/tasks", token, json=body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["field"] == "callbackUrl" and error["code"] == "EgressRefused"
    assert "its host 'localhost' resolves to" in error["message"]
    assert "loopback is not enabled" in error["message"]


def test_with_loopback_off_a_loopback_spec_endpoint_is_reported_in_status(
    cluster: Cluster, strict: Strict
) -> None:
    apply_agent(cluster, strict.namespace, "local", "worker", endpoint="http://127.0.0.1:9")

    def condition() -> dict[str, Any] | None:
        agent = cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, strict.namespace, "meshagents", "local"
        )
        for item in agent.get("status", {}).get("conditions") or []:
            if item["type"] == "EndpointAllowed":
                return dict(item)
        return None

    found = wait_for("the EndpointAllowed condition", condition)
    assert found["status"] == "False" and found["reason"] == "EndpointRefused"
    assert "127.0.0.1 is a loopback address (loopback is not enabled)" in found["message"]


def test_spec_endpoint_at_the_api_servers_address_is_refused_by_admission(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    # the API server shares 127.0.0.1 with the test agents: refused by its port
    apiserver = cluster.api.configuration.host  # https://127.0.0.1:<port>
    with pytest.raises(client.ApiException) as refused:
        apply_agent(cluster, namespace, "apiserver", "worker", endpoint=apiserver)
    assert "is the Kubernetes API server" in str(refused.value.body)


def test_the_operator_learns_the_service_range_from_the_cluster(operator: OperatorProcess) -> None:
    # the local control plane runs with --service-cluster-ip-range=10.96.0.0/24
    started = [line for line in operator.logs().splitlines() if "egress policy:" in line]
    assert started and "Service ranges 10.96.0.0/24" in started[0], started
