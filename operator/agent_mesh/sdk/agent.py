"""The Agent: a few lines turn a function into a mesh agent.

    agent = Agent(agent_type="worker", capabilities=["summarize"])

    @agent.task("summarize")
    async def summarize(payload, ctx): ...

    agent.run()

It serves `POST /v1/tasks`, `POST /v1/messages` and `GET /healthz`, refuses every call
without a valid mesh token (checked against the operator's JWKS) and the ACL permission
(`execute tasks`; `execute agents` for requests, `write events` for events), runs
at most `max_concurrent_tasks` at once, answers a redelivered (task uid, attempt) with
the first result, and beats its heartbeat. There is no unauthenticated mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from agent_mesh.auth.jwks import PublicKeySet
from agent_mesh.auth.revocation import RevocationList
from agent_mesh.auth.tokens import MeshClaims, TokenVerifier, bearer_token
from agent_mesh.domain.acl import MeshCall, PolicyIndex
from agent_mesh.domain.clock import SystemClock
from agent_mesh.domain.errors import (
    AuthError,
    ForbiddenError,
    MeshError,
    NotFoundError,
    UnavailableError,
    ValidationError,
)
from agent_mesh.domain.message import Message, MessageType
from agent_mesh.sdk.heartbeat import heartbeat_forever
from agent_mesh.sdk.identity import TokenSource

logger = logging.getLogger("agent_mesh.sdk")
JWKS_REFETCH_SECONDS: Final = 10.0
DEDUP_MAX: Final = 10_000

Handler = Callable[[Any, "TaskContext"], Any]
MessageHandler = Callable[[Message, MeshClaims], Any]


class TaskRequest(BaseModel):
    """What the coordinator sends to `POST /v1/tasks`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    task_uid: str = Field(min_length=1, max_length=128)
    attempt: int = Field(1, ge=1)
    task_type: str = Field(min_length=1, max_length=63)
    payload: Any = None
    metadata: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler knows about the call besides the payload."""

    task_uid: str
    attempt: int
    task_type: str
    caller: MeshClaims
    metadata: dict[str, str] = field(default_factory=dict)


class Agent:
    """An agent of the mesh; see the module docstring."""

    def __init__(
        self,
        agent_type: str,
        capabilities: list[str] | tuple[str, ...] = (),
        *,
        tokens: TokenSource | None = None,
        host: str = "0.0.0.0",  # noqa: S104  (an agent serves its pod's network)
        port: int = 8080,
        max_concurrent_tasks: int = 10,
        heartbeat_interval_seconds: float = 30.0,
        version: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.agent_type = agent_type
        self.capabilities = tuple(capabilities)
        self._tokens = tokens
        self.host = host
        self.port = port
        self.version = version
        self.endpoint = endpoint
        self.heartbeat_interval_seconds = heartbeat_interval_seconds
        self.max_concurrent_tasks = max_concurrent_tasks
        self._handlers: dict[str, Handler] = {}
        self._on_message: MessageHandler | None = None
        self._on_event: MessageHandler | None = None
        self._active = 0
        self._results: dict[tuple[str, int], asyncio.Future[Any]] = {}
        self._keys: PublicKeySet | None = None
        self._keys_fetched = 0.0
        self._revocations = RevocationList()
        self._policies = PolicyIndex()  # built-in defaults; custom caller types fail closed
        self._verifier = TokenVerifier(self._key_set, SystemClock(), self._revocations)

    # --- declaring --------------------------------------------------------------------

    def task(self, task_type: str) -> Callable[[Handler], Handler]:
        """Register the handler of `task_type` (a coroutine function or a plain one, which
        runs in a thread so it cannot block the agent)."""

        def register(fn: Handler) -> Handler:
            if task_type in self._handlers:
                raise ValueError(f"task type {task_type!r} already has a handler")
            self._handlers[task_type] = fn
            return fn

        return register

    def on_message(self, fn: MessageHandler) -> MessageHandler:
        """Handle requests from other agents: the return value is the reply's payload."""
        self._on_message = fn
        return fn

    def on_event(self, fn: MessageHandler) -> MessageHandler:
        """Handle events (broadcasts such as `agent.health`); nothing is replied."""
        self._on_event = fn
        return fn

    @property
    def active_tasks(self) -> int:
        return self._active

    # --- serving ----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_post("/v1/tasks", self._tasks)
        app.router.add_post("/v1/messages", self._messages)
        return app

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "activeTasks": self._active})

    async def _tasks(self, request: web.Request) -> web.Response:
        try:
            caller = await self._authenticate(request.headers.get("Authorization"))
            self._authorize(caller, MeshCall.SUBMIT_TASK)
            try:
                task = TaskRequest.model_validate_json(await request.read())
            except ValueError as error:
                raise ValidationError(f"task request is invalid: {error}", field="body") from None
            result = await self._run(task, caller)
        except MeshError as error:
            return web.json_response(error.to_wire(), status=error.status)
        return web.json_response(
            {"taskUid": task.task_uid, "attempt": task.attempt, "result": result}
        )

    async def _messages(self, request: web.Request) -> web.Response:
        try:
            caller = await self._authenticate(request.headers.get("Authorization"))
            try:
                message = Message.model_validate_json(await request.read())
            except ValueError as error:
                raise ValidationError(f"not a mesh message: {error}", field="body") from None
            if message.sender != caller.sub:
                raise ForbiddenError(
                    f"message says it is from {message.sender!r} but the token is {caller.sub!r}'s",
                    field="from",
                    code="NotYourAgent",
                )
            is_event = message.type is MessageType.EVENT
            self._authorize(
                caller, MeshCall.BROADCAST_EVENT if is_event else MeshCall.MESSAGE_AGENT
            )
            handler = self._on_event if is_event else self._on_message
            if message.type not in (MessageType.EVENT, MessageType.REQUEST) or handler is None:
                raise NotFoundError(
                    f"this agent does not take {message.type.value} messages", field="type"
                )
            answer = await self._call(handler, message, caller)
        except MeshError as error:
            return web.json_response(error.to_wire(), status=error.status)
        if is_event:
            return web.Response(status=202)
        return web.json_response(message.reply(answer).to_wire())

    @staticmethod
    async def _call(handler: MessageHandler, message: Message, caller: MeshClaims) -> Any:
        try:
            if inspect.iscoroutinefunction(handler):
                return await handler(message, caller)
            return await asyncio.to_thread(handler, message, caller)
        except MeshError:
            raise
        except Exception as error:
            raise MeshError(f"message handler failed: {error}", code="HandlerFailed") from error

    async def _run(self, task: TaskRequest, caller: MeshClaims) -> Any:
        key = (task.task_uid, task.attempt)
        first = self._results.get(key)
        if first is not None:  # a redelivery: the first run's result, not a second run
            return await asyncio.shield(first)
        handler = self._handlers.get(task.task_type)
        if handler is None:
            raise NotFoundError(
                f"this agent has no handler for task type {task.task_type!r}", field="taskType"
            )
        if self._active >= self.max_concurrent_tasks:
            raise UnavailableError(
                f"agent is at its limit of {self.max_concurrent_tasks} concurrent tasks",
                code="AgentBusy",
            )
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if len(self._results) >= DEDUP_MAX:
            self._results.pop(next(iter(self._results)))
        self._results[key] = future
        ctx = TaskContext(task.task_uid, task.attempt, task.task_type, caller, task.metadata)
        self._active += 1
        try:
            if inspect.iscoroutinefunction(handler):
                result = await handler(task.payload, ctx)
            else:
                result = await asyncio.to_thread(handler, task.payload, ctx)
        except Exception as error:
            failure = MeshError(f"task handler failed: {error}", code="TaskFailed")
            future.set_exception(failure)
            future.exception()  # retrieved: a redelivery re-raises it, nobody else needs to
            raise failure from error
        finally:
            self._active -= 1
        future.set_result(result)
        return result

    # --- inbound identity -------------------------------------------------------------

    def _key_set(self) -> PublicKeySet:
        if self._keys is None:
            raise AuthError("the mesh's signing keys are not loaded yet", code="KeysNotLoaded")
        return self._keys

    async def refresh_keys(self) -> None:
        """Fetch the operator's JWKS (at most every few seconds)."""
        if self._tokens is None:
            raise AuthError("no mesh URL: the agent cannot verify callers", code="NoMesh")
        now = time.monotonic()
        if self._keys is not None and now - self._keys_fetched < JWKS_REFETCH_SECONDS:
            return
        self._keys_fetched = now
        url = f"{self._tokens.mesh_url}/.well-known/jwks.json"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            self._keys = PublicKeySet.from_jwks(await response.json())

    async def _authenticate(self, authorization: str | None) -> MeshClaims:
        token = bearer_token(authorization)
        if self._keys is None:
            await self.refresh_keys()
        try:
            return self._verifier.verify(token)
        except AuthError as error:
            if error.code != "UnknownKey":
                raise
        await self.refresh_keys()  # the operator may have rotated its key
        return self._verifier.verify(token)

    def _authorize(self, caller: MeshClaims, call: MeshCall) -> None:
        ours = self._tokens.identity if self._tokens is not None else None
        decision = self._policies.decide(
            caller.agent_type,
            caller.namespace,
            call.action,
            call.resource,
            ours.namespace if ours is not None else caller.namespace,
        )
        if not decision.allowed:
            raise ForbiddenError(decision.reason, code="AccessDenied")

    # --- running ----------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Serve and beat until `stop` is set (or forever); in-flight tasks finish first."""
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        beats = None
        if self._tokens is not None:
            await self.refresh_keys()
            beats = asyncio.create_task(
                heartbeat_forever(
                    self._tokens,
                    self.heartbeat_interval_seconds,
                    lambda: self._active,
                    self.version,
                    self.endpoint,
                )
            )
        try:
            await (stop or asyncio.Event()).wait()
        finally:
            if beats is not None:
                beats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beats
            await runner.shutdown()  # stops accepting; in-flight handlers complete
            await runner.cleanup()

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM."""
        asyncio.run(self.serve())
