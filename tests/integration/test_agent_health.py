"""Health from heartbeats, against the real apiserver and an operator with short
thresholds (degraded after 2 s, unreachable after 4 s): no multi-minute sleeps."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from kubernetes import client, watch

from agent_mesh.api.common import GROUP, VERSION
from agent_mesh.testing import OperatorProcess
from tests.support.cluster import Cluster
from tests.support.mesh_api import apply_agent, call, error_of, token_of
from tests.support.namespaces import family, namespace_fixture
from tests.support.operators import own_operator_fixture
from tests.support.waiting import wait_for

HEALTH_FAMILY = family("amh")


fast_operator = own_operator_fixture(
    HEALTH_FAMILY,
    {
        "AGENT_MESH_HEALTH_DEGRADED_SECONDS": "2",
        "AGENT_MESH_HEALTH_UNREACHABLE_SECONDS": "4",
        "AGENT_MESH_HEALTH_SWEEP_SECONDS": "0.25",
        "AGENT_MESH_STATUS_WRITE_SECONDS": "30",
    },
)


ns = namespace_fixture(HEALTH_FAMILY)


def _status(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    obj = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "meshagents", name)
    return obj.get("status", {})  # type: ignore[no-any-return]


def _beat(op: OperatorProcess, ns: str, agent: str, token: str, **body: Any) -> httpx.Response:
    return call(op, "POST", f"/v1/agents/{ns}/{agent}/heartbeat", token, json=body)


def _health(cluster: Cluster, ns: str, name: str) -> str | None:
    return _status(cluster, ns, name).get("healthStatus")


def _ready(cluster: Cluster, ns: str, name: str) -> tuple[str, str] | None:
    for cond in _status(cluster, ns, name).get("conditions", []):
        if cond["type"] == "Ready":
            return cond["status"], cond["reason"]
    return None


def test_agent_goes_healthy_degraded_unreachable_and_healthy_again(
    cluster: Cluster, fast_operator: OperatorProcess, ns: str
) -> None:
    token = token_of(cluster, fast_operator, ns, "cycler", "worker")
    assert _health(cluster, ns, "cycler") == "pending"
    assert _beat(fast_operator, ns, "cycler", token, activeTasks=2).status_code == 200
    wait_for("healthy", lambda: _health(cluster, ns, "cycler") == "healthy")
    assert _ready(cluster, ns, "cycler") == ("True", "AgentHealthy")
    assert _status(cluster, ns, "cycler")["activeTasks"] == 2
    assert _status(cluster, ns, "cycler")["lastSeen"]
    wait_for("degraded", lambda: _health(cluster, ns, "cycler") == "degraded", timeout=10)
    assert _ready(cluster, ns, "cycler") == ("False", "AgentDegraded")
    wait_for("unreachable", lambda: _health(cluster, ns, "cycler") == "unreachable", timeout=10)
    assert _ready(cluster, ns, "cycler") == ("False", "AgentUnreachable")
    assert _beat(fast_operator, ns, "cycler", token).status_code == 200
    wait_for("healthy again", lambda: _health(cluster, ns, "cycler") == "healthy")

    def reasons() -> set[str]:
        events = client.CoreV1Api(cluster.api).list_namespaced_event(ns).items
        return {e.reason for e in events if e.involved_object.name == "cycler"}

    wait_for(
        "an Event per transition",
        lambda: {"AgentHealthy", "AgentDegraded", "AgentUnreachable"} <= reasons(),
    )


def test_a_burst_of_heartbeats_writes_status_once(
    cluster: Cluster, fast_operator: OperatorProcess, ns: str
) -> None:
    token = token_of(cluster, fast_operator, ns, "chatty", "worker")
    wait_for("registration", lambda: _health(cluster, ns, "chatty") == "pending")
    start = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "meshagents", "chatty")
    start_version = start["metadata"]["resourceVersion"]
    changes: list[dict[str, Any]] = []  # status writes: MODIFIED events whose status changed
    last_status = [start.get("status", {})]

    def record_changes() -> None:
        w = watch.Watch()
        for event in w.stream(
            cluster.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            ns,
            "meshagents",
            field_selector="metadata.name=chatty",
            resource_version=start_version,
            timeout_seconds=3,
        ):
            status = event["object"].get("status", {})
            if event["type"] == "MODIFIED" and status != last_status[-1]:
                changes.append(status)  # (kopf's own annotation updates change no status)
            last_status.append(status)

    watcher = threading.Thread(target=record_changes)
    watcher.start()
    with httpx.Client(
        base_url=fast_operator.mesh_url, timeout=10, verify=fast_operator.tls
    ) as http:
        deadline = time.monotonic() + 1.5  # stays healthy: well under the 2 s threshold
        beats = 0
        while time.monotonic() < deadline:
            response = http.post(
                f"/v1/agents/{ns}/chatty/heartbeat",
                json={"activeTasks": beats % 3},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200
            beats += 1
    watcher.join()
    assert beats > 50
    # while healthy, one write: the transition (the next lastSeen write is due after 30 s);
    # the watch may also see the later transitions to degraded/unreachable, written at once
    healthy = [c for c in changes if c.get("healthStatus") == "healthy"]
    assert len(healthy) == 1, changes
    assert all(c.get("healthStatus") != "pending" for c in changes), [
        c.get("healthStatus") for c in changes
    ]


def test_heartbeats_for_unknown_or_other_agents_are_refused(
    cluster: Cluster, fast_operator: OperatorProcess, ns: str
) -> None:
    token = token_of(cluster, fast_operator, ns, "honest", "worker")
    apply_agent(cluster, ns, "victim", "worker")
    other = _beat(fast_operator, ns, "victim", token)
    assert other.status_code == 403
    unknown = _beat(fast_operator, ns, "ghost", token)
    assert unknown.status_code == 403
    assert error_of(unknown)["code"] == "NotYourAgent"
    # the honest agent's own beat goes through the same status writes as a forged one
    # would have: once it is written, a forged beat would have been written too
    assert _beat(fast_operator, ns, "honest", token).status_code == 200
    wait_for("the honest beat to be written", lambda: _health(cluster, ns, "honest") == "healthy")
    assert _health(cluster, ns, "victim") == "pending"


def test_kubectl_shows_a_mixed_fleet_at_a_glance(
    cluster: Cluster, fast_operator: OperatorProcess, ns: str
) -> None:
    fleet = [
        ("fresh", "worker", ["summarize", "translate"], "http://127.0.0.1:7001"),
        ("stale", "critic", ["review"], "http://127.0.0.1:7002"),
        ("gone", "monitor", ["metrics"], "http://127.0.0.1:7003"),
    ]
    tokens = {
        name: token_of(cluster, fast_operator, ns, name, kind, capabilities=caps, endpoint=url)
        for name, kind, caps, url in fleet
    }
    apply_agent(cluster, ns, "silent", "orchestrator", capabilities=["planning"])
    _beat(fast_operator, ns, "gone", tokens["gone"])
    wait_for("gone to be unreachable", lambda: _health(cluster, ns, "gone") == "unreachable")
    _beat(fast_operator, ns, "stale", tokens["stale"], activeTasks=1)
    wait_for(
        "stale to be degraded", lambda: _health(cluster, ns, "stale") == "degraded", timeout=10
    )
    _beat(fast_operator, ns, "fresh", tokens["fresh"], activeTasks=4)
    wait_for("fresh to be healthy", lambda: _health(cluster, ns, "fresh") == "healthy")
    table = cluster.kubectl("get", "meshagents", "-n", ns, "-o", "wide").stdout
    print(table)
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert rows["fresh"][1:4] == ["worker", "healthy", "4"]
    assert rows["stale"][2] == "degraded"
    assert rows["gone"][2] == "unreachable"
    assert rows["silent"][2] == "pending"
