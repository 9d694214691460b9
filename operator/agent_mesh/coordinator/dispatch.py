"""Dispatch: one attempt sent to its agent, each in its own asyncio task.

It waits for the write-ahead (status names the agent and attempt before the agent gets
the task), resolves the agent's endpoint with its egress class (who chose the URL), mints
an operator token addressed to that agent alone that expires with the attempt (plus a
margin), and makes the call. The delivery is handed on unless the task moved on meanwhile
(deleted, failed over, answered by a report, reconciled).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, Protocol

from agent_mesh.auth.authority import Authority
from agent_mesh.coordinator.book import TaskBook
from agent_mesh.coordinator.status_sync import StatusSync
from agent_mesh.coordinator.tracked import Tracked
from agent_mesh.domain.agents import AgentRegistry
from agent_mesh.domain.clock import Clock
from agent_mesh.domain.discovery import view_of
from agent_mesh.domain.egress import EgressClass
from agent_mesh.domain.health import HealthTracker
from agent_mesh.domain.task_message import TaskRequest
from agent_mesh.domain.tasks import TaskState
from agent_mesh.transport.client import Delivery, Outcome

TASKS_PATH: Final = "/v1/tasks"


class AgentTransport(Protocol):
    """How tasks reach agents (agent_mesh.transport's Transport or BatchingTransport)."""

    async def post(
        self,
        endpoint: str,
        path: str,
        payload: TaskRequest,
        *,
        token: str | None = None,
        timeout_seconds: float | None = None,
        retries: int | None = None,
        egress: EgressClass = EgressClass.DERIVED,
    ) -> Delivery: ...

    async def close(self) -> None: ...


class Dispatcher:
    """Starts dispatches; each ends by handing its Delivery to `delivered`."""

    def __init__(
        self,
        *,
        book: TaskBook,
        status: StatusSync,
        registry: AgentRegistry,
        tracker: HealthTracker,
        authority: Authority,
        transport: AgentTransport,
        clock: Clock,
        delivered: Callable[[Tracked, Delivery], None],
    ) -> None:
        self._book = book
        self._status = status
        self._registry = registry
        self._tracker = tracker
        self._authority = authority
        self._transport = transport
        self._clock = clock
        self._delivered = delivered

    def start(self, tracked: Tracked) -> None:
        """Send the task's current attempt to its agent."""
        tracked.dispatch = asyncio.get_running_loop().create_task(
            self._run(tracked, tracked.state.attempt)
        )

    async def _run(self, tracked: Tracked, attempt: int) -> None:
        if tracked.writes is not None:  # in-memory tasks have nothing to wait for
            await self._status.persisted(tracked, attempt)
        delivery = await self._send(tracked.state, attempt)
        if not self._book.holds(tracked) or tracked.state.attempt != attempt:
            return  # deleted, failed over or reconciled meanwhile
        tracked.dispatch = None
        self._delivered(tracked, delivery)

    async def _send(self, state: TaskState, attempt: int) -> Delivery:
        agent_id = state.agent_id
        assert agent_id is not None
        record = self._registry.get(state.namespace, agent_id)
        view = view_of(record, self._tracker) if record is not None else None
        if view is None or view.endpoint is None:
            return Delivery(agent_id, Outcome.NO_ENDPOINT, 0, error="no endpoint known")
        now = self._clock.now()
        remaining = ((state.deadline() or now) - now).total_seconds()
        if remaining <= 0:
            return Delivery(view.endpoint, Outcome.TIMEOUT, 0, error="the attempt's time ran out")
        margin = self._authority.settings.dispatch_token_margin.total_seconds()
        message = TaskRequest.of(state.key, attempt, state.task_type, state.payload, state.metadata)
        return await self._transport.post(
            view.endpoint,
            TASKS_PATH,
            message,
            token=self._authority.operator_token(state.namespace, agent_id, remaining + margin),
            timeout_seconds=remaining,
            retries=0,
            egress=view.endpoint_class,
        )
