"""The reasons a MeshTask's conditions give: one enum for routing (why a task waits) and
for the coordinator (how an attempt or the task ended); api/meshtask.py re-exports it."""

from __future__ import annotations

from enum import StrEnum


class MeshTaskReason(StrEnum):
    """Reasons of MeshTask conditions; routing gives the first few (why a task has no agent)."""

    # Waiting for an agent (Assigned=False)
    QUEUED = "Queued"
    NO_CAPABLE_AGENT = "NoCapableAgent"
    """No agent in the namespace holds the required capabilities (whatever its state)."""
    NO_MATCHING_AGENT = "NoMatchingAgent"
    """Capable agents exist, but agentSelector (or a plug-in strategy) rules them all out."""
    NO_HEALTHY_AGENT = "NoHealthyAgent"
    """Capable, matching agents exist, but none is healthy (pending, degraded, unreachable)."""
    ALL_AGENTS_BUSY = "AllAgentsBusy"
    """Capable, matching, healthy agents exist, but all are at maxConcurrentTasks."""
    UNKNOWN_STRATEGY = "UnknownStrategy"
    """The strategy named is neither built in nor an installed plug-in."""
    STRATEGY_FAILED = "StrategyFailed"
    """A plug-in strategy failed to load, raised, or chose an agent that is no candidate."""
    RETRY_SCHEDULED = "RetryScheduled"
    # Assigned / Running
    AGENT_SELECTED = "AgentSelected"
    AGENT_ACCEPTED = "AgentAccepted"
    NOT_STARTED = "NotStarted"
    ATTEMPT_FINISHED = "AttemptFinished"
    # Outcome (Succeeded, Failed, Ready)
    IN_PROGRESS = "InProgress"
    RESULT_RECEIVED = "ResultReceived"
    AGENT_ERROR = "AgentError"
    ATTEMPT_TIMED_OUT = "AttemptTimedOut"
    AGENT_UNREACHABLE = "AgentUnreachable"
    RETRIES_EXHAUSTED = "RetriesExhausted"
    DISPATCH_FAILED = "DispatchFailed"
    PAYLOAD_TOO_LARGE = "PayloadTooLarge"
    RESULT_TOO_LARGE = "ResultTooLarge"
    INVALID_SPEC = "InvalidSpec"
