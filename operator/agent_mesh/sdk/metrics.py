"""The agent's own Prometheus series, served by the agent at `GET /metrics`.

Each Agent has a registry of its own: the calls it answered, its task runs, its load, its
process (CPU, memory, file descriptors) and the transport's series (its calls to other
agents, agent_mesh.transport.metrics). None of the operator's series is in it: the SDK
never imports agent_mesh.observability.metrics. Labels are bounded: routes are the
agent's own (`other` for any unknown path), task types only those it has handlers for.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Final, TypeVar

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from agent_mesh.transport.metrics import REGISTRY as TRANSPORT_REGISTRY

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OTHER_ROUTE: Final = "other"


class TaskOutcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    """The handler raised: the task failed."""
    HANDED_BACK = "handed_back"
    """The agent stopped before the handler finished (the coordinator retries it)."""


class AgentMetrics:
    """One agent's registry and the series the Agent records into it."""

    def __init__(self, active_tasks: Callable[[], int], task_limit: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.registry.register(TRANSPORT_REGISTRY)
        self.requests = Counter(
            "agentmesh_agent_requests",
            "Calls the agent answered, by route and HTTP status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.tasks = Counter(
            "agentmesh_agent_tasks",
            "Task handler runs, by task type and outcome (ok, failed, handed_back).",
            ["task_type", "outcome"],
            registry=self.registry,
        )
        self.task_duration = Histogram(
            "agentmesh_agent_task_duration_seconds",
            "How long a task handler ran, by task type.",
            ["task_type"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        Gauge(
            "agentmesh_agent_active_tasks",
            "Tasks and streams running now.",
            registry=self.registry,
        ).set_function(active_tasks)
        Gauge(
            "agentmesh_agent_max_concurrent_tasks",
            "The agent's limit of concurrent tasks.",
            registry=self.registry,
        ).set_function(task_limit)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of this agent's registry, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def timed(self, task_type: str, run: Awaitable[T]) -> T:
        """Await a task handler's run, counting its outcome and timing it."""
        started = time.perf_counter()
        outcome = TaskOutcome.FAILED
        try:
            result = await run
            outcome = TaskOutcome.OK
            return result
        except BaseException as error:
            if not isinstance(error, Exception):
                outcome = TaskOutcome.HANDED_BACK
            raise
        finally:
            self.tasks.labels(task_type, outcome).inc()
            self.task_duration.labels(task_type).observe(time.perf_counter() - started)

    @web.middleware
    async def count_requests(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Counts every answered call by route (the route's pattern, never the raw path)
        and status."""
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else OTHER_ROUTE
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            self.requests.labels(route, str(status)).inc()
