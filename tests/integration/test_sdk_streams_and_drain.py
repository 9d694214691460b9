"""SDK behaviour that needs control inside the agent: stream backpressure and framing
errors, partial results, misaddressed messages, the drain on stop, and MeshClient's
discovery cache. The agent runs in the test's event loop on 127.0.0.1, with its identity
from the real operator."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_mesh.devcluster.ports import free_port
from agent_mesh.domain.errors import DispatchError, NotFoundError, ValidationError
from agent_mesh.domain.message import Message, MessageType
from agent_mesh.domain.stream import NDJSON, StreamWriter, encode_frame
from agent_mesh.sdk import Agent, MeshClient, StreamContext, TaskContext
from agent_mesh.testing import OperatorProcess
from agent_mesh.transport.client import TransportConfig
from tests.support.cluster import Cluster
from tests.support.mesh_api import external_agent, token_for_agent, token_of, token_source
from tests.support.waiting import wait_for_async

Start = Callable[..., Awaitable[tuple[Agent, str]]]


@pytest.fixture
async def start(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> AsyncIterator[Start]:
    """start(agent_id, setup, **agent_kwargs): a served Agent and its URL."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def launch(
        agent_id: str,
        setup: Callable[[Agent], None],
        capabilities: tuple[str, ...] = (),
        ready_ca_file: str | None = None,
        **kwargs: Any,
    ) -> tuple[Agent, str]:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        credential = external_agent(
            cluster, namespace, agent_id, "worker", endpoint=url, capabilities=list(capabilities)
        )
        tokens = token_source(operator, namespace, agent_id, credential)
        agent = Agent("worker", tokens=tokens, host="127.0.0.1", port=port, **kwargs)
        setup(agent)
        stop = asyncio.Event()
        running.append((stop, asyncio.create_task(agent.serve(stop))))
        scheme_url = url.replace("http://", "https://") if agent.tls_cert_file else url
        await wait_ready(scheme_url, ready_ca_file)
        return agent, url

    yield launch
    for stop, task in running:
        stop.set()
        await task


async def wait_ready(url: str, ca_file: str | None = None) -> None:
    verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
    async with httpx.AsyncClient(verify=verify) as http:

        async def ready() -> bool:
            try:
                return (await http.get(f"{url}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for_async(f"the agent at {url} to be ready", ready, within=10, interval=0.05)


Boss = Callable[[str], str]


@pytest.fixture
def boss(cluster: Cluster, operator: OperatorProcess, namespace: str) -> Boss:
    """boss(agent_id): the token an orchestrator sends to that agent (exchanged for it)."""
    token = token_of(cluster, operator, namespace, "boss", "orchestrator")
    return lambda agent_id: token_for_agent(operator, token, namespace, agent_id)


@pytest.fixture
async def boss_client(
    cluster: Cluster, operator: OperatorProcess, namespace: str
) -> AsyncIterator[MeshClient]:
    credential = external_agent(cluster, namespace, "conductor", "orchestrator")
    tokens = token_source(operator, namespace, "conductor", credential)
    async with MeshClient(tokens) as mesh:
        yield mesh


async def test_a_slow_consumer_holds_back_the_producer(
    start: Start, boss_client: MeshClient
) -> None:
    """Backpressure: the sender produces only a few socket buffers ahead of the handler."""
    consumed = 0
    gate = asyncio.Event()

    def setup(agent: Agent) -> None:
        @agent.stream("slow")
        async def slow(payload: Any, chunks: AsyncIterator[Any], ctx: StreamContext) -> Any:
            nonlocal consumed
            async for _ in chunks:
                consumed += 1
                if consumed == 10:
                    await gate.wait()
            return consumed

    await start("slow", setup)
    produced = 0
    block = "x" * 64 * 1024

    async def lots() -> AsyncIterator[str]:
        nonlocal produced
        for _ in range(2000):  # 128 MiB if nothing held it back
            produced += 1
            yield block

    async def run() -> list[Any]:
        async with boss_client.stream("slow", to="slow", chunks=lots()) as parts:
            return [p async for p in parts]

    streaming = asyncio.create_task(run())
    seen = [-1]

    def producer_stalled() -> bool:
        """The handler is stuck at chunk 10 and the producer made no progress since the
        last look: held back (or, without backpressure, done with all 2000)."""
        stalled = consumed >= 10 and produced == seen[0]
        seen[0] = produced
        return stalled

    await wait_for_async("the producer to stall", producer_stalled, within=60, interval=0.5)
    ahead = produced - consumed
    gate.set()
    assert await streaming == [2000]
    assert ahead < 400, f"the producer ran {ahead} chunks (64 KiB each) ahead"


async def test_partial_results_stream_from_a_generator_task_handler(
    start: Start, boss: Boss
) -> None:
    def setup(agent: Agent) -> None:
        @agent.task("count")
        async def count(payload: int, ctx: TaskContext) -> AsyncIterator[int]:
            for i in range(payload):
                yield i

    _, url = await start("counter", setup)
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{url}/v1/tasks",
            headers={"Authorization": f"Bearer {boss('counter')}"},
            json={"taskUid": "c1", "taskType": "count", "payload": 4},
        )
    assert response.json()["result"] == [0, 1, 2, 3]


async def raw_stream(url: str, token: str, frames: list[bytes]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{url}/v1/stream",
            headers={"Authorization": f"Bearer {token}", "Content-Type": NDJSON},
            content=b"".join(frames),
        )


def echo_setup(agent: Agent) -> None:
    @agent.stream("echo")
    async def echo(payload: Any, chunks: AsyncIterator[Any], ctx: StreamContext) -> Any:
        async for chunk in chunks:
            yield chunk


def last_frame(response: httpx.Response) -> dict[str, Any]:
    return dict(json.loads(response.text.strip().splitlines()[-1]))


async def test_a_stream_cut_before_complete_ends_in_an_error_frame(
    start: Start, boss: Boss
) -> None:
    _, url = await start("echo-cut", echo_setup)
    opening = Message.new(MessageType.REQUEST, "boss", "echo-cut", metadata={"stream": "echo"})
    writer = StreamWriter(opening, reply=False)
    frames = [encode_frame(opening), encode_frame(writer.chunk(1))]
    response = await raw_stream(url, boss("echo-cut"), frames)
    final = last_frame(response)
    assert final["metadata"]["error"] == "StreamTruncated"


async def test_an_out_of_order_frame_ends_the_stream_naming_seq(start: Start, boss: Boss) -> None:
    _, url = await start("echo-order", echo_setup)
    opening = Message.new(MessageType.REQUEST, "boss", "echo-order", metadata={"stream": "echo"})
    writer = StreamWriter(opening, reply=False)
    writer.chunk(0)  # never sent
    frames = [encode_frame(opening), encode_frame(writer.chunk(1)), encode_frame(writer.complete())]
    final = last_frame(await raw_stream(url, boss("echo-order"), frames))
    assert final["payload"]["error"]["field"] == "metadata.seq"


async def test_an_oversized_frame_is_refused(start: Start, boss: Boss) -> None:
    _, url = await start("echo-big", echo_setup)
    opening = Message.new(MessageType.REQUEST, "boss", "echo-big", metadata={"stream": "echo"})
    chunk = StreamWriter(opening, reply=False).chunk("x" * (2 * 1024 * 1024))
    frames = [encode_frame(opening), encode_frame(chunk)]
    final = last_frame(await raw_stream(url, boss("echo-big"), frames))
    assert final["metadata"]["error"] == "FrameTooLarge"


async def test_a_stream_must_open_with_a_request(start: Start, boss: Boss) -> None:
    _, url = await start("echo-open", echo_setup)
    event = Message.new(MessageType.EVENT, "boss", "echo-open", metadata={"stream": "echo"})
    response = await raw_stream(url, boss("echo-open"), [encode_frame(event)])
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "type"


async def test_a_message_for_another_agent_is_refused_naming_to(start: Start, boss: Boss) -> None:
    def setup(agent: Agent) -> None:
        @agent.on_message
        async def answer(message: Message, caller: Any) -> Any:
            return "answered"

    _, url = await start("alice", setup)
    message = Message.new(MessageType.REQUEST, "boss", "bob", "hi")
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{url}/v1/messages",
            headers={"Authorization": f"Bearer {boss('alice')}"},
            json=message.to_wire(),
        )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "Misaddressed",
        "field": "to",
        "message": "message is addressed to 'bob', this is agent 'alice'",
    }


@pytest.mark.disruptive  # a planned stop (a rollout), not a fault
async def test_stopping_finishes_short_tasks_and_hands_back_long_ones(
    cluster: Cluster, operator: OperatorProcess, namespace: str, boss: Boss
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    credential = external_agent(cluster, namespace, "drainer", "worker", endpoint=url)
    tokens = token_source(operator, namespace, "drainer", credential)
    agent = Agent("worker", tokens=tokens, host="127.0.0.1", port=port, drain_seconds=1.0)
    started: list[str] = []
    both_started = asyncio.Event()

    @agent.task("sleep")
    async def sleep(seconds: float, ctx: TaskContext) -> str:
        started.append(ctx.task_uid)
        if len(started) == 2:
            both_started.set()
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    stop = asyncio.Event()
    serving = asyncio.create_task(agent.serve(stop))
    await wait_ready(url)
    to_drainer = boss("drainer")
    async with httpx.AsyncClient(timeout=30) as http:

        def run(uid: str, seconds: float) -> Awaitable[httpx.Response]:
            return http.post(
                f"{url}/v1/tasks",
                headers={"Authorization": f"Bearer {to_drainer}"},
                json={"taskUid": uid, "taskType": "sleep", "payload": seconds},
            )

        short, long = (
            asyncio.ensure_future(run("short", 0.5)),
            asyncio.ensure_future(run("long", 60)),
        )
        await both_started.wait()
        stop.set()

        async def draining() -> bool:
            return bool((await http.get(f"{url}/readyz")).json()["draining"])

        await wait_for_async("the agent to start draining", draining)
        late = await run("late", 0.1)  # arrives while draining
        short_response, long_response = await short, await long
    await serving
    assert late.status_code == 503 and late.json()["error"]["code"] == "AgentDraining"
    assert short_response.json()["result"] == "slept 0.5"
    assert long_response.status_code == 503
    assert long_response.json()["error"]["code"] == "HandedBack"


async def test_discovery_is_cached_for_its_ttl(
    cluster: Cluster, operator: OperatorProcess, namespace: str, start: Start
) -> None:
    now = [0.0]
    credential = external_agent(cluster, namespace, "looker", "orchestrator")
    tokens = token_source(operator, namespace, "looker", credential)
    async with MeshClient(tokens, clock=lambda: now[0]) as mesh:
        assert await mesh.discover("cache-probe") == []
        await start("prober", lambda agent: None, capabilities=("cache-probe",))
        assert await mesh.discover("cache-probe") == []  # the cached answer
        now[0] += 59
        assert await mesh.discover("cache-probe") == []
        now[0] += 2  # past the 60 s TTL: asked again
        assert [a.agent_id for a in await mesh.discover("cache-probe")] == ["prober"]
        mesh.forget()
        fresh = await mesh.discover("cache-probe", fresh=True)
        assert fresh[0].health == "healthy" and fresh[0].endpoint is not None


async def test_client_argument_errors_name_the_field(boss_client: MeshClient) -> None:
    with pytest.raises(ValidationError) as both:
        await boss_client.request("x", to="a", capability="b")
    assert both.value.field == "to"
    with pytest.raises(NotFoundError) as none:
        await boss_client.request("x", capability="no-such-capability")
    assert none.value.field == "capability"
    with pytest.raises(NotFoundError) as unknown:
        await boss_client.request("x", to="nobody")
    assert unknown.value.field == "agentId"


def test_sync_stream_handlers_are_refused_at_registration() -> None:
    agent = Agent("worker", port=0)
    with pytest.raises(TypeError, match="must be async"):

        @agent.stream("nope")
        def nope(payload: Any, chunks: Any, ctx: Any) -> None: ...


@pytest.mark.parametrize("value", ["soon", "0", "-3"])
def test_bad_interval_variables_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("AGENT_MESH_HEARTBEAT_SECONDS", value)
    with pytest.raises(ValidationError) as error:
        Agent("worker", port=0)
    assert error.value.field == "AGENT_MESH_HEARTBEAT_SECONDS"


async def test_an_agent_serves_https_and_the_client_verifies_it(
    start: Start, boss_client: MeshClient, tmp_path: Path
) -> None:
    from agent_mesh.pki.certs import issue, make_ca

    ca, ca_key = make_ca("sdk-test-ca")
    served = issue(ca, ca_key, "agent", ip_addresses=("127.0.0.1",), server=True)
    for name, data in (
        ("ca.pem", ca.cert_pem),
        ("tls.crt", served.cert_pem),
        ("tls.key", served.key_pem),
    ):
        (tmp_path / name).write_bytes(data)

    def setup(agent: Agent) -> None:
        @agent.on_message
        async def answer(message: Message, caller: Any) -> Any:
            return {"over": "tls"}

    await start(
        "secure",
        setup,
        tls_cert_file=str(tmp_path / "tls.crt"),
        tls_key_file=str(tmp_path / "tls.key"),
        ready_ca_file=str(tmp_path / "ca.pem"),
    )
    secure = MeshClient(
        boss_client.tokens, config=TransportConfig(use_tls=True, ca_file=str(tmp_path / "ca.pem"))
    )
    async with secure:
        assert await secure.request(None, to="secure") == {"over": "tls"}
    plain = MeshClient(boss_client.tokens, config=TransportConfig(retries=0))
    async with plain:  # plain http to a TLS port: no answer
        with pytest.raises(DispatchError):
            await plain.request(None, to="secure")


def test_tls_needs_both_files_naming_the_missing_one() -> None:
    with pytest.raises(ValidationError) as error:
        Agent("worker", port=0, tls_cert_file="tls.crt")
    assert error.value.field == "AGENT_MESH_TLS_KEY_FILE"
