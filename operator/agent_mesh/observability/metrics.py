"""Prometheus metrics of the operator (names as shared/DESIGN.md §8), served at /metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest

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

AGENTS = Gauge("agentmesh_agents", "Agents known to the operator, by health.", ["health"])
HEARTBEATS = Counter(
    "agentmesh_heartbeats", "Heartbeats received on the mesh API, by outcome.", ["result"]
)
STATUS_WRITES = Counter(
    "agentmesh_agent_status_writes", "MeshAgent status writes made by the health loop."
)


def exposition() -> tuple[bytes, str]:
    """The text exposition of every registered metric, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
