"""Prometheus metrics of the operator (names as shared/DESIGN.md §8), served at /metrics.

Operator-only: neither the SDK nor the transport imports this module, so an agent's
process holds none of these series. The transport's series live in its own registry
(agent_mesh.transport.metrics), which the mesh API's /metrics serves alongside (this
module stands below the transport, so it names no other registry).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

TOKENS_ISSUED = Counter(
    "agentmesh_auth_tokens_issued",
    "Mesh tokens issued by POST /v1/token.",
    ["method"],
)
TOKENS_VERIFIED = Counter(
    "agentmesh_auth_tokens_verified",
    "Mesh tokens presented to the mesh API, by outcome (ok or the rejection code).",
    ["result"],
)
AUTH_DECISIONS = Counter(
    "agentmesh_auth_decisions",
    "ACL decisions on mesh API calls.",
    ["decision"],
)
REQUESTS_THROTTLED = Counter(
    "agentmesh_mesh_requests_throttled",
    "Mesh API requests refused with 429 by an abuse limit, by limit.",
    ["limit"],
)

AGENTS = Gauge("agentmesh_agents", "Agents known to the operator, by health.", ["health"])
HEARTBEATS = Counter(
    "agentmesh_heartbeats", "Heartbeats received on the mesh API, by outcome.", ["result"]
)
STATUS_WRITES = Counter(
    "agentmesh_agent_status_writes", "MeshAgent status writes made by the health loop."
)

TASKS = Gauge("agentmesh_tasks", "Tasks the coordinator tracks, by phase.", ["phase"])
TASKS_COMPLETED = Counter("agentmesh_tasks_completed", "Tasks that ended Completed.")
TASKS_FAILED = Counter(
    "agentmesh_tasks_failed", "Tasks that ended Failed or TimedOut, by reason.", ["reason"]
)
TASK_DURATION = Histogram(
    "agentmesh_task_duration_seconds",
    "From a task's creation to its completion.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
FAST_PATH_SUBMITTED = Counter(
    "agentmesh_fastpath_tasks_submitted",
    "Tasks submitted through POST /v1/tasks, by kind (memory or durable).",
    ["kind"],
)
FAST_PATH_WITHDRAWN = Counter(
    "agentmesh_fastpath_tasks_withdrawn",
    "In-memory tasks withdrawn unfinished when their time budget ran out.",
)
TASK_CALLBACKS = Counter(
    "agentmesh_task_callbacks", "Completion callbacks sent, by outcome (ok, failed).", ["outcome"]
)
ROUTING_DURATION = Histogram(
    "agentmesh_routing_duration_seconds",
    "One routing decision (choosing an agent, or finding why none fits).",
    buckets=(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01),
)


def exposition(*others: CollectorRegistry) -> tuple[bytes, str]:
    """The text exposition of the operator's series (then those of `others`), and its
    content type."""
    body = generate_latest(REGISTRY) + b"".join(generate_latest(r) for r in others)
    return body, CONTENT_TYPE_LATEST
