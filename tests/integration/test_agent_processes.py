"""The examples as real agent processes on 127.0.0.1, with identities from the real
operator, talking through the transport and MeshClient: request/response, a critic
calling a worker under an ACLPolicy, broadcast to 20 monitors, a stream of 10,000
chunks, a large payload streamed without being held, and refusals. (Broadcast with one
monitor killed: test_fault_agent_killed.py.)"""

from __future__ import annotations

import base64
import hashlib
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.domain.errors import DispatchError
from agent_mesh.domain.message import Message, MessageType
from agent_mesh.sdk import MeshClient
from agent_mesh.testing import OperatorProcess, manifest
from agent_mesh.transport.client import TransportConfig
from tests.support.agents import SETTINGS, Mesh, launch, register, running_mesh
from tests.support.cluster import Cluster
from tests.support.mesh_api import call, send_message, token_for_agent, token_of
from tests.support.namespaces import TEST_NAMESPACE_PREFIX, fresh_namespace
from tests.support.waiting import wait_for, wait_for_async

MONITORS = 20


@pytest.fixture(scope="module")
def mesh(
    cluster: Cluster, operator: OperatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    """One namespace with the example agents running: echo, summarizer, critic (with the
    sample ACLPolicy that lets it call workers) and 20 monitors."""
    with fresh_namespace(cluster, f"{TEST_NAMESPACE_PREFIX}procs-") as namespace:
        samples = Path(__file__).resolve().parents[2] / "config" / "samples"
        cluster.kubectl("apply", "-n", namespace, "-f", str(samples / "aclpolicy-critic.yaml"))
        wait_for(
            "the critic ACLPolicy to be accepted",
            lambda: any(
                c.get("type") == "Accepted" and c.get("status") == "True"
                for c in cluster.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "aclpolicies", "critic"
                )
                .get("status", {})
                .get("conditions", [])
            ),
        )
        logs = tmp_path_factory.mktemp("agents")
        plan = [
            ("echo_worker.py", "echo", "worker", ["echo"]),
            ("summarizer.py", "summarizer", "worker", ["summarize"]),
            ("critic.py", "critic", "critic", ["critique"]),
            *[("monitor.py", f"monitor-{i:02d}", "monitor", ["observe"]) for i in range(MONITORS)],
        ]
        with running_mesh(cluster, operator, namespace, plan, logs) as mesh:
            yield mesh


@pytest.fixture
async def conductor(mesh: Mesh) -> AsyncIterator[MeshClient]:
    """An orchestrator calling from the test process."""
    async with mesh.client("orchestrator", f"conductor-{uuid.uuid4().hex[:6]}") as client_:
        yield client_


async def collect(
    mesh_client: MeshClient, name: str, chunks: AsyncIterator[Any] | None = None
) -> list[Any]:
    """Run stream `name` on the echo agent to its end; what came back."""
    async with mesh_client.stream(name, to="echo", chunks=chunks) as parts:
        return [part async for part in parts]


async def test_request_response_by_id_and_by_capability(conductor: MeshClient) -> None:
    assert await conductor.request({"n": 1}, to="echo") == {"n": 1}
    reply = await conductor.request(
        {"text": "Cats sleep. Cats eat fish. Dogs bark loudly.", "sentences": 1},
        capability="summarize",
    )
    assert reply == {"summary": ["Cats sleep."]}


async def test_a_critic_calls_a_worker_through_the_mesh(mesh: Mesh) -> None:
    """The critic calls the summarizer as itself (a token exchanged for that recipient),
    allowed by the sample ACLPolicy."""
    token = mesh.token_for("boss", "orchestrator", to="critic")
    text = "The mesh routes tasks. The mesh keeps results. Agents beat their hearts."
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{mesh.agents['critic'].url}/v1/tasks",
            headers={"Authorization": f"Bearer {token}"},
            json={"taskUid": "t-1", "taskType": "critique", "payload": {"text": text}},
        )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["summary"] and result["summary"] in text
    assert 0 < result["coverage"] <= 1


async def test_monitors_hear_health_transitions_from_the_operator(conductor: MeshClient) -> None:
    """monitor-19 started last: its pending -> healthy transition was broadcast, with a
    token the operator minted for each monitor, to the monitors already registered."""

    async def heard_by_monitor_00() -> list[dict[str, Any]]:
        heard: list[dict[str, Any]] = (await conductor.request(None, to="monitor-00"))["heard"]
        return [
            e
            for e in heard
            if e["event"] == "agent.health" and e["data"]["agentId"] == "monitor-19"
        ]

    events = await wait_for_async(
        "monitor-00 to hear monitor-19 become healthy", heard_by_monitor_00, within=10
    )
    assert events[0]["from"] == "agent-mesh-operator"
    assert events[0]["data"]["health"] == "healthy"


async def test_a_stream_of_10000_chunks_arrives_in_order(conductor: MeshClient) -> None:
    async def numbers() -> AsyncIterator[dict[str, int]]:
        for i in range(10_000):
            yield {"i": i}

    received: list[int] = []
    async with conductor.stream("echo", to="echo", chunks=numbers()) as parts:
        async for part in parts:
            received.append(part["i"])
    assert received == list(range(10_000))


async def test_a_large_payload_is_streamed_without_being_held(conductor: MeshClient) -> None:
    """256 MiB goes through the digest stream; the agent process never holds it."""
    block = 64 * 1024
    total = 256 * 1024 * 1024
    expected = hashlib.sha256()
    produced = 0

    async def blocks() -> AsyncIterator[str]:
        nonlocal produced
        for n in range(total // block):
            data = n.to_bytes(8, "big") * (block // 8)
            expected.update(data)
            produced += len(data)
            yield base64.b64encode(data).decode()

    async with conductor.stream("digest", to="echo", chunks=blocks()) as parts:
        (summary,) = [part async for part in parts]
    assert summary["bytes"] == produced == total
    assert summary["sha256"] == expected.hexdigest()
    assert summary["rssGrowthBytes"] < total // 4, summary  # 64 MiB of 256


async def test_a_stream_that_breaks_mid_way_is_an_error_on_both_sides(
    conductor: MeshClient,
) -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        await collect(conductor, "echo", failing())


async def test_unknown_stream_names_the_field(conductor: MeshClient) -> None:
    with pytest.raises(DispatchError) as refused:
        await collect(conductor, "nope")
    assert refused.value.field == "metadata.stream"


@pytest.mark.parametrize("path", ["/v1/tasks", "/v1/messages", "/v1/stream"])
@pytest.mark.parametrize("token", [None, "not-a-jwt", "forged"])
def test_calls_without_a_valid_token_are_refused(mesh: Mesh, path: str, token: str | None) -> None:
    headers = {}
    if token == "forged":  # a well-formed token signed by a key the mesh does not have
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        token = jwt.encode(
            {"sub": "echo", "agentType": "orchestrator"},
            key,
            algorithm="ES256",
            headers={"typ": "agent-mesh+jwt", "kid": "attacker"},
        )
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    response = httpx.post(f"{mesh.agents['echo'].url}{path}", headers=headers, content=b"{}")
    assert response.status_code == 401, response.text


async def test_a_monitor_cannot_execute_or_broadcast(mesh: Mesh) -> None:
    async with mesh.client("monitor", "watcher", TransportConfig(retries=0)) as watcher:
        with pytest.raises(DispatchError) as refused:
            await watcher.request({"x": 1}, to="echo")
        assert refused.value.code == "AccessDenied"
        outcomes = await watcher.broadcast("fake.alarm", capability="observe")
        # every monitor of the fleet is asked and each refuses: a monitor may not broadcast
        assert sorted(outcomes) == [f"monitor-{i:02d}" for i in range(MONITORS)], outcomes
        assert {d.status for d in outcomes.values()} == {403}, outcomes
    token = mesh.token_for("watcher-2", "monitor", to="echo")
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{mesh.agents['echo'].url}/v1/tasks",
            headers={"Authorization": f"Bearer {token}"},
            json={"taskUid": "t-m", "taskType": "echo", "payload": 1},
        )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "AccessDenied"


def test_a_worker_cannot_call_admin_operations_or_other_agents(mesh: Mesh) -> None:
    token = token_of(mesh.cluster, mesh.operator, mesh.namespace, "grunt", "worker")
    revoke = call(mesh.operator, "POST", "/v1/revocations", token, json={"jti": "x"})
    assert revoke.status_code == 403
    audit = call(mesh.operator, "GET", "/v1/audit", token)
    assert audit.status_code == 403
    discovery = call(mesh.operator, "GET", "/v1/agents", token)
    assert discovery.status_code == 403
    message = Message.new(MessageType.REQUEST, "grunt", "echo", {"x": 1})
    to_echo = token_for_agent(mesh.operator, token, mesh.namespace, "echo")
    response = send_message(mesh.agents["echo"].url, to_echo, message)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "AccessDenied"


def test_a_revoked_token_is_refused_by_agents_within_their_sync_interval(
    mesh: Mesh,
) -> None:
    """The token revoked is the one the echo agent received (exchanged for it by the
    victim): revocations reach agents through their sync, not only the operator."""
    boss = token_of(mesh.cluster, mesh.operator, mesh.namespace, "boss-r", "orchestrator")
    victim = mesh.token_for("victim", "orchestrator", to="echo")
    message = Message.new(MessageType.REQUEST, "victim", "echo", "hi")

    def echo_status() -> int:
        return send_message(mesh.agents["echo"].url, victim, message).status_code

    assert echo_status() == 200
    jti = jwt.decode(victim, options={"verify_signature": False})["jti"]
    assert call(mesh.operator, "POST", "/v1/revocations", boss, json={"jti": jti}).is_success
    # the agents sync revocations every AGENT_MESH_POLICY_SYNC_SECONDS: a refusal must
    # follow within a few intervals, not whenever
    sync = float(SETTINGS["AGENT_MESH_POLICY_SYNC_SECONDS"])
    wait_for(
        "the echo agent to refuse the revoked token",
        lambda: echo_status() == 401,
        timeout=5 * sync,
    )


def test_an_acl_policy_reaches_running_agents(mesh: Mesh) -> None:
    """A custom type is refused until a policy grants it, then allowed, without restarts."""
    token = mesh.token_for("scout", "scout", to="echo")
    message = Message.new(MessageType.REQUEST, "scout", "echo", "hi")

    def echo_status() -> int:
        return send_message(mesh.agents["echo"].url, token, message).status_code

    assert echo_status() == 403
    mesh.cluster.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        mesh.namespace,
        "aclpolicies",
        manifest(
            "ACLPolicy",
            "scout",
            {
                "agentType": "scout",
                "allowedActions": ["execute"],
                "allowedResources": ["agents"],
            },
        ),
    )
    # the operator takes the policy from its watch; the agents pull it on their next sync
    sync = float(SETTINGS["AGENT_MESH_POLICY_SYNC_SECONDS"])
    wait_for(
        "the echo agent to apply the scout policy",
        lambda: echo_status() == 200,
        timeout=10 * sync,
    )


@pytest.mark.disruptive  # a planned stop (a rollout), not a fault
def test_stopping_an_agent_drains_it(mesh: Mesh, tmp_path: Path) -> None:
    """SIGTERM (what a pod rollout does): the task in flight finishes and is answered, a
    task sent while draining is refused, and the process exits cleanly. The agent is one
    of the test's own: the module's fleet stays whole for every other test."""
    url, credential = register(mesh.cluster, mesh.namespace, "leaving", "worker", ["echo"])
    agent = launch(
        "echo_worker.py",
        mesh.operator,
        mesh.namespace,
        "leaving",
        url,
        credential,
        tmp_path,
        extra_env={"AGENT_MESH_DRAIN_SECONDS": "60"},  # the drain waits for the task
    )
    try:
        agent.wait_ready()
        token = mesh.token_for("rollout", "orchestrator", to="leaving")

        def run(uid: str, seconds: float) -> httpx.Response:
            return httpx.post(
                f"{url}/v1/tasks",
                headers={"Authorization": f"Bearer {token}"},
                json={"taskUid": uid, "taskType": "sleep", "payload": {"seconds": seconds}},
                timeout=60,
            )

        with ThreadPoolExecutor(1) as pool:
            # long enough that the refusal below lands while it runs, however slow the machine
            in_flight = pool.submit(run, "in-flight", 8)
            wait_for("the task to start", lambda: "task in-flight attempt" in agent.logs())
            agent.process.send_signal(signal.SIGTERM)
            wait_for(
                "the agent to start draining",
                lambda: httpx.get(f"{url}/readyz", timeout=5).json().get("draining"),
            )
            late = run("late", 0.1)
            finished = in_flight.result(timeout=60)
        assert late.status_code == 503, late.text
        assert late.json()["error"]["code"] == "AgentDraining"
        assert finished.status_code == 200, finished.text
        assert finished.json()["result"] == {"slept": 8, "by": "leaving"}
        assert agent.process.wait(timeout=30) == 0, agent.logs()[-2000:]
    finally:
        agent.stop()
