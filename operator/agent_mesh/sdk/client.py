"""MeshClient: how a program with a mesh identity calls other agents.

    async with MeshClient() as mesh:                 # identity from the environment
        reply = await mesh.request({"text": t}, capability="summarize")
        answer = await mesh.submit("summarize", {"text": t}, capabilities=["summarize"])
        await mesh.broadcast("build.finished", {"ok": True}, agent_type="monitor")
        async with mesh.stream("ingest", to="indexer", chunks=lines()) as parts:
            async for part in parts: ...

Every call carries the caller's own mesh token, so the receiver's ACL applies to the
caller, never to a shared identity. Discovery answers are cached for 60 s (what the mesh
API's Cache-Control allows); a target that cannot be reached drops its cache entry.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Self

import aiohttp

from agent_mesh.domain.errors import (
    DispatchError,
    NotFoundError,
    ValidationError,
)
from agent_mesh.domain.message import BROADCAST, Message, MessageType
from agent_mesh.domain.stream import STREAM_KEY
from agent_mesh.sdk.identity import IssuedToken, TokenSource
from agent_mesh.sdk.meshapi import call_mesh
from agent_mesh.sdk.tasks import TaskAnswer, TaskSpec
from agent_mesh.transport.client import Delivery, Outcome, Transport, TransportConfig

DISCOVERY_TTL_SECONDS: Final = 60.0
EVENT_KEY: Final = "event"
"""`metadata.event` of a broadcast names the event (e.g. `agent.health`)."""


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """An agent as the mesh's discovery reports it."""

    agent_id: str
    namespace: str
    agent_type: str
    capabilities: tuple[str, ...]
    health: str
    active_tasks: int
    max_concurrent_tasks: int
    endpoint: str | None
    version: str | None = None

    @classmethod
    def from_wire(cls, item: dict[str, Any]) -> AgentInfo:
        return cls(
            agent_id=item["agentId"],
            namespace=item["namespace"],
            agent_type=item["agentType"],
            capabilities=tuple(item.get("capabilities") or ()),
            health=item["health"],
            active_tasks=int(item.get("activeTasks") or 0),
            max_concurrent_tasks=int(item.get("maxConcurrentTasks") or 0),
            endpoint=item.get("endpoint"),
            version=item.get("version"),
        )


_CacheKey = tuple[str, tuple[str, ...], str | None, str | None]


class MeshClient:
    """Calls into the mesh as the agent `tokens` names; close() (or `async with`) when done."""

    def __init__(
        self,
        tokens: TokenSource | None = None,
        *,
        config: TransportConfig | None = None,
        discovery_ttl_seconds: float = DISCOVERY_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokens = tokens or TokenSource.from_env()
        self.transport = Transport(config, token=self.tokens.token)
        self._ttl = discovery_ttl_seconds
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._cache: dict[_CacheKey, tuple[float, list[AgentInfo]]] = {}
        self._turns: dict[tuple[str, ...], itertools.count[int]] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.transport.close()
        if self._session is not None:
            await self._session.close()

    async def identity(self) -> IssuedToken:
        """Who this client calls as (exchanging its credential on first use)."""
        await self.tokens.token()
        issued = self.tokens.identity
        assert issued is not None
        return issued

    # --- discovery --------------------------------------------------------------------

    async def discover(
        self,
        capability: str | Sequence[str] = (),
        *,
        agent_type: str | None = None,
        health: str | None = "healthy",
        namespace: str | None = None,
        fresh: bool = False,
    ) -> list[AgentInfo]:
        """Agents in `namespace` (default: the caller's) holding every capability given,
        of `agent_type`, in `health` (None: any), ordered by agentId."""
        capabilities = (capability,) if isinstance(capability, str) else tuple(capability)
        namespace = namespace or (await self.identity()).namespace
        key: _CacheKey = (namespace, tuple(sorted(capabilities)), agent_type, health)
        cached = self._cache.get(key)
        if cached is not None and not fresh and cached[0] > self._clock():
            return cached[1]
        params: list[tuple[str, str]] = [("namespace", namespace), ("limit", "1000")]
        params += [("capability", c) for c in capabilities]
        if agent_type:
            params.append(("type", agent_type))
        if health:
            params.append(("health", health))
        answer = await self._mesh_get("/v1/agents", params)
        agents = [AgentInfo.from_wire(item) for item in answer["items"]]
        self._cache[key] = (self._clock() + self._ttl, agents)
        return agents

    async def agent(self, agent_id: str, namespace: str | None = None) -> AgentInfo:
        """One agent by id (NotFoundError when it is not registered)."""
        namespace = namespace or (await self.identity()).namespace
        return AgentInfo.from_wire(await self._mesh_get(f"/v1/agents/{namespace}/{agent_id}"))

    def forget(self) -> None:
        """Drop cached discovery answers (the next call asks the mesh again)."""
        self._cache.clear()

    # --- calling agents ---------------------------------------------------------------

    async def request(
        self,
        payload: Any = None,
        *,
        to: str | None = None,
        capability: str | Sequence[str] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Any:
        """Send a request to agent `to`, or to a healthy agent holding `capability`
        (taking turns among them), and return the payload of its correlated reply."""
        target = await self._target(to, capability)
        me = await self.identity()
        message = Message.new(
            MessageType.REQUEST, me.agent_id, target.agent_id, payload, metadata=metadata
        )
        try:
            reply = await self.transport.request(_endpoint(target), message)
        except DispatchError as error:
            if error.code in ("DispatchConnectError", "DispatchTimeout"):
                self.forget()
            raise
        return reply.payload

    async def broadcast(
        self,
        event: str,
        data: Any = None,
        *,
        capability: str | Sequence[str] = (),
        agent_type: str | None = None,
        health: str | None = None,
        namespace: str | None = None,
    ) -> dict[str, Delivery]:
        """Send event `event` to every agent the selector matches (except the caller), in
        parallel; the outcome per agentId. An agent without a known endpoint is reported,
        not skipped."""
        me = await self.identity()
        targets = [
            agent
            for agent in await self.discover(
                capability, agent_type=agent_type, health=health, namespace=namespace, fresh=True
            )
            if agent.agent_id != me.agent_id
        ]
        message = Message.new(
            MessageType.EVENT, me.agent_id, BROADCAST, data, metadata={EVENT_KEY: event}
        )
        reachable = {a.agent_id: a.endpoint for a in targets if a.endpoint}
        outcomes = await self.transport.broadcast(reachable, message)
        for agent in targets:
            if not agent.endpoint:
                outcomes[agent.agent_id] = Delivery(
                    agent.agent_id, Outcome.NO_ENDPOINT, 0, error="the agent has no endpoint yet"
                )
        return outcomes

    @contextlib.asynccontextmanager
    async def stream(
        self,
        name: str,
        payload: Any = None,
        *,
        to: str | None = None,
        capability: str | Sequence[str] | None = None,
        chunks: AsyncIterable[Any] | None = None,
    ) -> AsyncIterator[AsyncIterator[Any]]:
        """Open stream `name` on agent `to` (or one holding `capability`), sending
        `chunks` as they are produced; yields the agent's chunks in order."""
        target = await self._target(to, capability)
        me = await self.identity()
        opening = Message.new(
            MessageType.REQUEST, me.agent_id, target.agent_id, payload, metadata={STREAM_KEY: name}
        )
        async with self.transport.stream(_endpoint(target), opening, chunks) as parts:
            yield parts

    async def _target(self, to: str | None, capability: str | Sequence[str] | None) -> AgentInfo:
        if (to is None) == (capability is None):
            raise ValidationError("name exactly one of `to` and `capability`", field="to")
        if to is not None:
            return await self.agent(to)
        assert capability is not None
        capable = await self.discover(capability)
        if not capable:
            raise NotFoundError(
                f"no healthy agent has capability {capability!r}", field="capability"
            )
        wanted = (capability,) if isinstance(capability, str) else tuple(sorted(capability))
        turn = next(self._turns.setdefault(wanted, itertools.count()))
        return capable[turn % len(capable)]

    # --- tasks (the mesh API's fast path) ----------------------------------------------

    async def submit(
        self,
        task: TaskSpec | str,
        payload: Any = None,
        *,
        wait: bool = True,
        wait_seconds: float | None = None,
        namespace: str | None = None,
        callback_url: str | None = None,
        **spec: Any,
    ) -> TaskAnswer:
        """Run one task through the coordinator: `submit("summarize", {...},
        capabilities=["summarize"])` or `submit(TaskSpec(...))`. With `wait` (default) the
        answer comes when the task has ended or the wait bound passed (check
        `answer.finished`); without, at once, and `task(answer.id)` reads it later.
        `durable=True` makes it a MeshTask. Keyword arguments are TaskSpec fields."""
        if isinstance(task, str):
            task = TaskSpec(task, payload, **spec)
        elif payload is not None or spec:
            raise ValidationError("give a TaskSpec or its fields, not both", field="task")
        body = task.to_wire()
        body.update(_options(wait, wait_seconds, namespace, callback_url))
        return TaskAnswer.from_wire(await self._submit(body, wait))

    async def submit_many(
        self,
        tasks: Sequence[TaskSpec],
        *,
        wait: bool = True,
        wait_seconds: float | None = None,
        namespace: str | None = None,
        callback_url: str | None = None,
    ) -> list[TaskAnswer]:
        """Submit a batch in one call (at most 1,000 tasks); answers in the same order."""
        body: dict[str, Any] = {"tasks": [t.to_wire() for t in tasks]}
        body.update(_options(wait, wait_seconds, namespace, callback_url))
        answer = await self._submit(body, wait)
        return [TaskAnswer.from_wire(item) for item in answer["tasks"]]

    async def task(self, task_id: str) -> TaskAnswer:
        """A submitted task by id (NotFoundError once an in-memory task's answer is no
        longer kept: 10 minutes after it ended, by default)."""
        return TaskAnswer.from_wire(await self._mesh_get(f"/v1/tasks/{task_id}"))

    async def _submit(self, body: dict[str, Any], wait: bool) -> Any:
        # a synchronous submit may wait as long as its tasks' time budgets: no total timeout
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30) if wait else None
        return await self._mesh_call("POST", "/v1/tasks", body=body, client_timeout=timeout)

    # --- the mesh API -----------------------------------------------------------------

    async def _mesh_get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        return await self._mesh_call("GET", path, params)

    async def _mesh_call(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]] = (),
        *,
        body: Any = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return await call_mesh(
            self._session,
            self.tokens,
            method,
            path,
            params,
            body=body,
            client_timeout=client_timeout,
            max_bytes=self.transport.config.response_max_bytes,
        )


def _options(
    wait: bool, wait_seconds: float | None, namespace: str | None, callback_url: str | None
) -> dict[str, Any]:
    options: dict[str, Any] = {"wait": wait}
    if wait_seconds is not None:
        options["waitSeconds"] = wait_seconds
    if namespace is not None:
        options["namespace"] = namespace
    if callback_url is not None:
        options["callbackUrl"] = callback_url
    return options


def _endpoint(agent: AgentInfo) -> str:
    if not agent.endpoint:
        raise DispatchError(
            f"agent {agent.namespace}/{agent.agent_id} has no endpoint yet", code="NoEndpoint"
        )
    return agent.endpoint
