"""Tells monitor agents when an agent's health changes: each `agent.health` transition
becomes an event broadcast to the monitors of that namespace, each with a short-lived
operator token addressed to that monitor alone. Best effort: a monitor that misses one
sees the next, and the MeshAgent's status and Events keep the record."""

from __future__ import annotations

import logging
from typing import Any, Final

from agent_mesh.auth.authority import Authority
from agent_mesh.domain.acl import OPERATOR_SUBJECT, BuiltinAgentType
from agent_mesh.domain.agents import AgentRegistry
from agent_mesh.domain.discovery import view_of
from agent_mesh.domain.egress import EgressClass
from agent_mesh.domain.health import HealthStatus, HealthTracker
from agent_mesh.domain.message import BROADCAST, Message, MessageType
from agent_mesh.transport.client import Outcome, Transport, TransportConfig

logger = logging.getLogger("agent_mesh.health")
EVENT: Final = "agent.health"


class HealthBroadcaster:
    """A HealthMonitor listener: `monitor.listeners.append(HealthBroadcaster(...))`."""

    def __init__(
        self,
        registry: AgentRegistry,
        tracker: HealthTracker,
        authority: Authority,
        transport: Transport | None = None,
    ) -> None:
        self._registry = registry
        self._tracker = tracker
        self._authority = authority
        # events are not worth waiting for: one try, a short timeout
        self._transport = transport or Transport(TransportConfig(timeout_seconds=5, retries=0))

    async def __call__(self, event: dict[str, Any]) -> None:
        namespace = str(event["namespace"])
        targets: dict[str, str] = {}
        classes: dict[str, EgressClass] = {}
        for agent_id in self._registry.candidate_ids(namespace, (), BuiltinAgentType.MONITOR.value):
            record = self._registry.get(namespace, agent_id)
            if record is None:
                continue
            view = view_of(record, self._tracker)
            if view.endpoint and view.health is not HealthStatus.UNREACHABLE:
                targets[agent_id] = view.endpoint
                classes[agent_id] = view.endpoint_class
        if not targets:
            return
        message = Message.new(
            MessageType.EVENT, OPERATOR_SUBJECT, BROADCAST, event, metadata={"event": EVENT}
        )
        seconds = self._authority.settings.broadcast_token_lifetime.total_seconds()
        tokens = {
            agent_id: self._authority.operator_token(namespace, agent_id, seconds)
            for agent_id in targets
        }
        outcomes = await self._transport.broadcast(targets, message, tokens=tokens, egress=classes)
        missed = sorted(n for n, d in outcomes.items() if d.outcome is not Outcome.OK)
        if missed:
            logger.info("agent.health event not delivered to monitors %s", ", ".join(missed))

    async def close(self) -> None:
        await self._transport.close()
