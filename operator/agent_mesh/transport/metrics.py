"""The transport's Prometheus series, in a registry of their own.

Whoever runs a transport serves these beside its own series: the operator on the mesh
API's `/metrics`, an SDK agent on the agent's `/metrics`. Importing the transport
registers nothing in prometheus_client's global registry, so an agent never carries the
operator's series. The series count every transport of the process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

TRANSPORT_ACTIVE = Gauge(
    "agentmesh_transport_active_connections",
    "Requests to agents in flight (one connection each).",
    registry=REGISTRY,
)
TRANSPORT_REQUESTS = Counter(
    "agentmesh_transport_requests",
    "Messages sent to agents, by final outcome.",
    ["outcome"],
    registry=REGISTRY,
)
TRANSPORT_DURATION = Histogram(
    "agentmesh_transport_request_duration_seconds",
    "Duration of one HTTP attempt to an agent.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
