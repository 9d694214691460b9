"""The Agent: a few lines turn a function into a mesh agent.

    agent = Agent(agent_type="worker", capabilities=["summarize"])

    @agent.task("summarize")
    async def summarize(payload, ctx): ...

    agent.run()

It serves `POST /v1/tasks`, `POST /v1/tasks/batch`, `POST /v1/messages`,
`POST /v1/stream`, `GET /healthz`, `GET /readyz` and `GET /metrics` (its own series,
agent_mesh.sdk.metrics, and its gate's). Every call needs a valid mesh token addressed to
it (checked against the operator's JWKS and revocations) and the ACL permission: `execute
tasks` for tasks, `execute agents` for requests and streams, `write events` for events.
Until its gate has loaded identity, keys, policies and revocations once, every call is
answered 503 `GateNotReady` (sdk/gate.py: it fails closed). It runs at most
`max_concurrent_tasks` at once, answers a redelivered (task uid, attempt) with the first
result (to another caller only with `read results`), and beats its heartbeat. There is no
unauthenticated mode. On stop it takes no new work, lets running tasks finish for
`drain_seconds`, and hands the rest back (503 `HandedBack`, which the coordinator retries
elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from prometheus_client import generate_latest

from agent_mesh.auth.tokens import MeshClaims
from agent_mesh.domain.acl import MeshCall
from agent_mesh.domain.errors import (
    AuthError,
    ForbiddenError,
    MeshError,
    NotFoundError,
    UnavailableError,
    ValidationError,
)
from agent_mesh.domain.jsondepth import DEFAULT_MAX_DEPTH, check_json_depth
from agent_mesh.domain.message import BROADCAST, Message, MessageType
from agent_mesh.domain.ratelimit import retry_after_seconds
from agent_mesh.domain.stream import (
    NDJSON,
    STREAM_KEY,
    StreamReader,
    StreamWriter,
    encode_frame,
    parse_frame,
)
from agent_mesh.domain.task_message import TaskBatch, TaskRequest
from agent_mesh.domain.wire import validate_json
from agent_mesh.observability.logging import configure_logging
from agent_mesh.sdk.client import MeshClient
from agent_mesh.sdk.gate import Gate
from agent_mesh.sdk.heartbeat import heartbeat_forever
from agent_mesh.sdk.identity import TokenSource
from agent_mesh.sdk.metrics import AgentMetrics
from agent_mesh.transport.client import read_frame

logger = logging.getLogger("agent_mesh.sdk")
DEDUP_MAX: Final = 10_000
DEFAULT_CONCURRENCY: Final = 10

Handler = Callable[[Any, "TaskContext"], Any]
MessageHandler = Callable[[Message, MeshClaims], Any]
StreamHandler = Callable[[Any, AsyncIterator[Any], "StreamContext"], Any]


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler knows about the call besides the payload."""

    task_uid: str
    attempt: int
    task_type: str
    caller: MeshClaims
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StreamContext:
    """What a stream handler knows about the stream besides its chunks."""

    opening: Message
    caller: MeshClaims


class Agent:
    """An agent of the mesh; see the module docstring."""

    def __init__(
        self,
        agent_type: str,
        capabilities: list[str] | tuple[str, ...] = (),
        *,
        tokens: TokenSource | None = None,
        host: str | None = None,
        port: int | None = None,
        max_concurrent_tasks: int | None = None,
        heartbeat_interval_seconds: float | None = None,
        policy_sync_seconds: float | None = None,
        policy_stale_seconds: float | None = None,
        drain_seconds: float | None = None,
        version: str | None = None,
        endpoint: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
    ) -> None:
        """Without `tokens`, the identity comes from the environment when the agent starts
        (TokenSource.from_env); host and port default to AGENT_MESH_HOST / AGENT_MESH_PORT,
        else 0.0.0.0:8080 (the pod's network). The intervals default to
        AGENT_MESH_HEARTBEAT_SECONDS (30), AGENT_MESH_POLICY_SYNC_SECONDS (30) and
        AGENT_MESH_DRAIN_SECONDS (30); a sync failing for AGENT_MESH_POLICY_STALE_SECONDS
        (default three sync intervals) makes the agent not ready. The task limit defaults
        to AGENT_MESH_MAX_CONCURRENT_TASKS, else the MeshAgent's spec.maxConcurrentTasks
        (which the operator reports at token exchange), else 10. With a certificate and key
        (or AGENT_MESH_TLS_CERT_FILE and AGENT_MESH_TLS_KEY_FILE) it serves https, for
        direct mode across networks the mesh does not encrypt."""
        self.agent_type = agent_type
        self.capabilities = tuple(capabilities)
        self._tokens = tokens
        self.host = host or os.environ.get("AGENT_MESH_HOST", "0.0.0.0")  # noqa: S104
        self.port = port if port is not None else int(os.environ.get("AGENT_MESH_PORT", "8080"))
        self.version = version
        self.endpoint = endpoint or os.environ.get("AGENT_MESH_ENDPOINT") or None
        self.heartbeat_interval_seconds = _seconds(
            heartbeat_interval_seconds, "AGENT_MESH_HEARTBEAT_SECONDS"
        )
        self.policy_sync_seconds = _seconds(policy_sync_seconds, "AGENT_MESH_POLICY_SYNC_SECONDS")
        self.policy_stale_seconds = _seconds(
            policy_stale_seconds, "AGENT_MESH_POLICY_STALE_SECONDS", 3 * self.policy_sync_seconds
        )
        self.drain_seconds = _seconds(drain_seconds, "AGENT_MESH_DRAIN_SECONDS")
        self.tls_cert_file = tls_cert_file or os.environ.get("AGENT_MESH_TLS_CERT_FILE")
        self.tls_key_file = tls_key_file or os.environ.get("AGENT_MESH_TLS_KEY_FILE")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValidationError(
                "serving TLS needs both a certificate and a key file",
                field="AGENT_MESH_TLS_KEY_FILE"
                if self.tls_cert_file
                else "AGENT_MESH_TLS_CERT_FILE",
            )
        limit = max_concurrent_tasks or os.environ.get("AGENT_MESH_MAX_CONCURRENT_TASKS")
        self._limit_given = limit is not None
        self.max_concurrent_tasks = int(limit) if limit is not None else DEFAULT_CONCURRENCY
        self._handlers: dict[str, Handler] = {}
        self._streams: dict[str, StreamHandler] = {}
        self._on_message: MessageHandler | None = None
        self._on_event: MessageHandler | None = None
        self._active = 0
        self._running: set[asyncio.Task[Any]] = set()
        self._draining = False
        # (task uid, attempt) → the first run's result, and who delivered it (ns, agentId)
        self._results: dict[tuple[str, int], tuple[asyncio.Future[Any], tuple[str, str]]] = {}
        self._gate = self._new_gate(tokens) if tokens is not None else None
        self._mesh: MeshClient | None = None
        self.metrics = AgentMetrics(lambda: self._active, lambda: self.max_concurrent_tasks)

    def _new_gate(self, tokens: TokenSource) -> Gate:
        return Gate(tokens, self.policy_sync_seconds, stale_seconds=self.policy_stale_seconds)

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

    def stream(self, name: str) -> Callable[[StreamHandler], StreamHandler]:
        """Register the handler of streams opened with `metadata.stream = name`:
        `handler(payload, chunks, ctx)` gets the opening payload and an async iterator of
        the caller's chunks. An async generator streams what it yields back; a coroutine
        function's return value (unless None) is the one chunk sent back."""

        def register(fn: StreamHandler) -> StreamHandler:
            if not (inspect.isasyncgenfunction(fn) or inspect.iscoroutinefunction(fn)):
                raise TypeError(f"stream handler {name!r} must be async (def or generator)")
            if name in self._streams:
                raise ValueError(f"stream {name!r} already has a handler")
            self._streams[name] = fn
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

    @property
    def tokens(self) -> TokenSource:
        """The agent's identity (from the environment unless given; set on start)."""
        if self._tokens is None:
            self._tokens = TokenSource.from_env()
        return self._tokens

    @property
    def mesh(self) -> MeshClient:
        """A MeshClient calling as this agent, for handlers that call other agents;
        closed when the agent stops."""
        if self._mesh is None:
            self._mesh = MeshClient(self.tokens)
        return self._mesh

    # --- serving ----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=1024 * 1024, middlewares=[self.metrics.count_requests]
        )
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v1/tasks", self._tasks)
        app.router.add_post("/v1/tasks/batch", self._task_batch)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/stream", self._stream)
        return app

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "activeTasks": self._active})

    async def _readyz(self, _: web.Request) -> web.Response:
        """Ready once it can check callers (identity, keys, policies and revocations
        loaded), while its syncs keep succeeding (not stale), and until it drains."""
        gate = self._gate
        loaded = gate is not None and gate.loaded
        stale = gate is not None and gate.stale
        ready = loaded and not stale and not self._draining
        body = {"ready": ready, "loaded": loaded, "stale": stale, "draining": self._draining}
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        """The agent's own series (agent_mesh.sdk.metrics) and its gate's, for Prometheus."""
        body, content_type = self.metrics.exposition()
        if self._gate is not None:
            body += generate_latest(self._gate.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _tasks(self, request: web.Request) -> web.Response:
        try:
            caller = await self._authenticate(request.headers.get("Authorization"))
            self._authorize(caller, MeshCall.SUBMIT_TASK)
            task = validate_json(TaskRequest, await _read_body(request), "task request")
            result = await self._run(task, caller)
        except MeshError as error:
            return _error_response(error)
        return web.json_response(
            {"taskUid": task.task_uid, "attempt": task.attempt, "result": result}
        )

    async def _task_batch(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/tasks/batch`: `{"tasks": [task request, ...]}` → `{"results": [...]}`
        in the same order, each `{taskUid, attempt, result}` or `{taskUid, attempt,
        error, status}`; with `Accept: application/x-ndjson`, one such line per task as
        it ends instead (how the operator's batched dispatch reads it). One HTTP call and
        one token check for many tasks (the per-call overhead is what limits
        throughput); each task still runs as if sent alone, concurrently, under the same
        limit and de-duplication, so a task that finds no free slot is answered
        `AgentBusy` on its own while the others run."""
        try:
            caller = await self._authenticate(request.headers.get("Authorization"))
            self._authorize(caller, MeshCall.SUBMIT_TASK)
            batch = validate_json(TaskBatch, await _read_body(request), "task batch")
        except MeshError as error:
            return _error_response(error)
        runs = [asyncio.ensure_future(self._answer(task, caller)) for task in batch.tasks]
        if NDJSON not in request.headers.get("Accept", ""):
            return web.json_response({"results": await asyncio.gather(*runs)})
        # NDJSON: each answer as soon as its task ends, so quick ones do not wait for slow
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
        for run in asyncio.as_completed(runs):
            await response.write(json.dumps(await run).encode() + b"\n")
        await response.write_eof()
        return response

    async def _answer(self, task: TaskRequest, caller: MeshClaims) -> dict[str, Any]:
        """One task of a batch as its answer line: `result`, or `error` with the HTTP
        `status` a single call would have had (503 means it did not run: retry it)."""
        item: dict[str, Any] = {"taskUid": task.task_uid, "attempt": task.attempt}
        try:
            item["result"] = await self._run(task, caller)
        except MeshError as error:
            item["error"] = error.to_wire()["error"]
            item["status"] = error.status
        except Exception as error:
            logger.exception("task %s failed in a batch", task.task_uid)
            failure = MeshError(f"task failed: {error}", code="TaskFailed")
            item["error"], item["status"] = failure.to_wire()["error"], failure.status
        return item

    async def _messages(self, request: web.Request) -> web.Response:
        try:
            caller = await self._authenticate(request.headers.get("Authorization"))
            try:
                message = Message.model_validate_json(await _read_body(request))
            except ValueError as error:
                raise ValidationError(f"not a mesh message: {error}", field="body") from None
            self._check_addresses(message, caller)
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
            return _error_response(error)
        if is_event:
            return web.Response(status=202)
        reply = message.reply(answer).model_dump_json(by_alias=True, exclude_none=True)
        return web.Response(text=reply, content_type="application/json")

    def _check_addresses(self, message: Message, caller: MeshClaims) -> None:
        if message.sender != caller.sub:
            raise ForbiddenError(
                f"message says it is from {message.sender!r} but the token is {caller.sub!r}'s",
                field="from",
                code="NotYourAgent",
            )
        ours = self._require_gate().agent_id  # configured, or fixed by the first sync
        if message.to not in (ours, BROADCAST):
            raise ValidationError(
                f"message is addressed to {message.to!r}, this is agent {ours!r}",
                field="to",
                code="Misaddressed",
            )

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/stream`: NDJSON frames in (opening request, chunks, complete), NDJSON
        frames out; see agent_mesh.domain.stream for the framing rules."""
        try:
            caller = await self._authenticate(request.headers.get("Authorization"))
            opening = parse_frame(_shallow(await read_frame(request.content), "opening"))
            if opening.type is not MessageType.REQUEST:
                raise ValidationError(
                    f"a stream opens with a request, not a {opening.type.value}", field="type"
                )
            self._check_addresses(opening, caller)
            self._authorize(caller, MeshCall.MESSAGE_AGENT)
            name = opening.metadata.get(STREAM_KEY, "")
            handler = self._streams.get(name)
            if handler is None:
                raise NotFoundError(
                    f"this agent has no stream handler {name!r} (metadata.{STREAM_KEY})",
                    field=f"metadata.{STREAM_KEY}",
                )
            self._take_slot()
        except MeshError as error:
            return _error_response(error)
        reader = StreamReader(opening)
        writer = StreamWriter(opening, reply=True)

        async def inbound() -> AsyncIterator[Any]:
            while True:
                line = await read_frame(request.content)
                if not line.endswith(b"\n"):
                    raise reader.truncated()
                done, payload = reader.accept(parse_frame(_shallow(line, "chunk")))
                if done:
                    return
                yield payload

        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        running = asyncio.current_task()
        if running is not None:
            self._running.add(running)
        try:
            await response.prepare(request)
            try:
                ctx = StreamContext(opening, caller)
                if inspect.isasyncgenfunction(handler):
                    async for part in handler(opening.payload, inbound(), ctx):
                        await response.write(encode_frame(writer.chunk(part)))
                else:
                    result = await handler(opening.payload, inbound(), ctx)
                    if result is not None:
                        await response.write(encode_frame(writer.chunk(result)))
                final = writer.complete()
            except MeshError as error:
                final = writer.complete(error)
            except asyncio.CancelledError:
                if running is not None:
                    running.uncancel()  # the drain's cancel: answer, then end normally
                final = writer.complete(
                    UnavailableError("the agent stopped mid-stream", code="HandedBack")
                )
            except Exception as error:
                logger.exception("stream handler %r failed", name)
                final = writer.complete(
                    MeshError(f"stream handler failed: {error}", code="HandlerFailed")
                )
            await response.write(encode_frame(final))
            await response.write_eof()
        finally:
            self._active -= 1
            if running is not None:
                self._running.discard(running)
        return response

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
        delivered = self._results.get(key)
        if delivered is not None:  # a redelivery: the first run's result, not a second run
            first, submitter = delivered
            if submitter != (caller.namespace, caller.sub):
                self._may_read_result(caller, task, submitter)
            try:
                return await asyncio.shield(first)
            except asyncio.CancelledError:
                if not first.cancelled():
                    raise
                raise UnavailableError(
                    "the first delivery was handed back", code="HandedBack"
                ) from None
        handler = self._handlers.get(task.task_type)
        if handler is None:
            raise NotFoundError(
                f"this agent has no handler for task type {task.task_type!r}", field="taskType"
            )
        self._take_slot()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if len(self._results) >= DEDUP_MAX:
            self._results.pop(next(iter(self._results)))
        self._results[key] = (future, (caller.namespace, caller.sub))
        ctx = TaskContext(task.task_uid, task.attempt, task.task_type, caller, task.metadata)
        running = asyncio.ensure_future(
            self.metrics.timed(task.task_type, _invoke(handler, task.payload, ctx))
        )
        self._running.add(running)
        try:
            result = await running
        except asyncio.CancelledError:
            self._results.pop(key, None)  # not finished: a redelivery runs it again
            future.cancel()
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves, not just the handler by the drain
            raise UnavailableError(
                "the agent stopped before the task finished; it is handed back",
                code="HandedBack",
            ) from None
        except Exception as error:
            failure = (
                error
                if isinstance(error, MeshError)
                else MeshError(f"task handler failed: {error}", code="TaskFailed")
            )
            future.set_exception(failure)
            future.exception()  # retrieved: a redelivery re-raises it, nobody else needs to
            raise failure from error
        finally:
            self._running.discard(running)
            self._active -= 1
        future.set_result(result)
        return result

    def _may_read_result(
        self, caller: MeshClaims, task: TaskRequest, submitter: tuple[str, str]
    ) -> None:
        """Another caller's redelivery gets the first run's result (computed from the first
        caller's payload, not its own) only when it may read results."""
        try:
            self._authorize(caller, MeshCall.READ_RESULT)
        except ForbiddenError as denied:
            raise ForbiddenError(
                f"task {task.task_uid} attempt {task.attempt} was delivered by "
                f"{submitter[0]}/{submitter[1]}; returning its result to "
                f"{caller.namespace}/{caller.sub} needs read results: {denied.message}",
                field="taskUid",
                code="AccessDenied",
            ) from None

    def _take_slot(self) -> None:
        if self._draining:
            raise UnavailableError("the agent is shutting down", code="AgentDraining")
        if self._active >= self.max_concurrent_tasks:
            raise UnavailableError(
                f"agent is at its limit of {self.max_concurrent_tasks} concurrent tasks",
                code="AgentBusy",
            )
        self._active += 1

    # --- inbound identity -------------------------------------------------------------

    def _require_gate(self) -> Gate:
        if self._gate is None:
            raise AuthError("the agent is not started: it cannot verify callers", code="NoMesh")
        return self._gate

    async def refresh_keys(self) -> None:
        """Load the gate now: identity, the operator's JWKS, policies and revocations
        (serve does it too, and refetches the JWKS on an unknown key). Raises what the
        mesh answered when it cannot."""
        await self._require_gate().sync()

    async def _authenticate(self, authorization: str | None) -> MeshClaims:
        return await self._require_gate().authenticate(authorization)

    def _authorize(self, caller: MeshClaims, call: MeshCall) -> None:
        self._require_gate().authorize(caller, call)

    # --- running ----------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Serve and beat until `stop` is set (or forever), then drain: no new work,
        running tasks get `drain_seconds` to finish, the rest are handed back."""
        if self._gate is None:
            self._gate = self._new_gate(self.tokens)
        gate = self._gate
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        tls = None
        if self.tls_cert_file and self.tls_key_file:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        await web.TCPSite(runner, self.host, self.port, ssl_context=tls).start()
        syncing = asyncio.create_task(gate.run())  # until loaded, calls get 503
        beats = asyncio.create_task(self._beat_once_loaded(gate))
        logger.info(
            "agent %s serving on %s:%s",
            self.tokens.agent_id or self.agent_type,
            self.host,
            self.port,
        )
        try:
            await (stop or asyncio.Event()).wait()
        finally:
            await self._drain()
            for loop_task in (beats, syncing):
                loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop_task
            await runner.shutdown()
            await runner.cleanup()
            if self._mesh is not None:
                await self._mesh.close()

    async def _beat_once_loaded(self, gate: Gate) -> None:
        """Announce the agent (heartbeats) only once it can take calls; take its task limit
        from its MeshAgent, as the operator reported it, unless given."""
        await gate.wait_loaded()
        issued = self.tokens.identity
        if not self._limit_given and issued is not None and issued.max_concurrent_tasks:
            self.max_concurrent_tasks = issued.max_concurrent_tasks
        await heartbeat_forever(
            self.tokens,
            self.heartbeat_interval_seconds,
            lambda: self._active,
            self.version,
            self.endpoint,
        )

    async def _drain(self) -> None:
        self._draining = True
        running = set(self._running)
        if not running:
            return
        logger.info("draining %d running tasks for up to %s s", len(running), self.drain_seconds)
        _, pending = await asyncio.wait(running, timeout=self.drain_seconds)
        for task in pending:
            task.cancel()
        if pending:
            logger.warning("handed back %d tasks that did not finish in time", len(pending))
            await asyncio.wait(pending, timeout=5)

    def run(self) -> None:
        """Serve until SIGINT or SIGTERM (what Kubernetes sends), then drain and exit."""

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await self.serve(stop)

        configure_logging(
            os.environ.get("AGENT_MESH_LOG_LEVEL", "info"),
            os.environ.get("AGENT_MESH_LOG_FORMAT", "json"),
        )
        asyncio.run(main())


def _error_response(error: MeshError) -> web.Response:
    headers = None
    if error.retry_after is not None:
        headers = {"Retry-After": str(retry_after_seconds(error.retry_after))}
    return web.json_response(error.to_wire(), status=error.status, headers=headers)


async def _read_body(request: web.Request) -> bytes:
    """The body, refused (400) when it nests deeper than DEFAULT_MAX_DEPTH: no parser
    recursion on a hostile document."""
    return _shallow(await request.read(), "body")


def _shallow(raw: bytes, field: str) -> bytes:
    check_json_depth(raw, DEFAULT_MAX_DEPTH, field)
    return raw


async def _invoke(handler: Handler, payload: Any, ctx: TaskContext) -> Any:
    """Run a task handler: a coroutine function on the loop, a plain function in a thread,
    an async generator to the list of what it yielded (its partial results)."""
    if inspect.isasyncgenfunction(handler):
        return [part async for part in handler(payload, ctx)]
    if inspect.iscoroutinefunction(handler):
        return await handler(payload, ctx)
    return await asyncio.to_thread(handler, payload, ctx)


def _seconds(given: float | None, variable: str, default: float = 30.0) -> float:
    if given is not None:
        return given
    raw = os.environ.get(variable)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(
            f"{variable} must be a number of seconds, not {raw!r}", field=variable
        ) from None
    if value <= 0:
        raise ValidationError(f"{variable} must be positive, not {raw!r}", field=variable)
    return value
