"""Health from heartbeats, against the real apiserver and an operator with short
thresholds (degraded after 2 s, unreachable after 4 s): no multi-minute sleeps."""

from __future__ import annotations

import itertools
import os
import signal
import threading
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


def _history(cluster: Cluster, ns: str, name: str, since: str) -> list[dict[str, Any]]:
    """Every status the apiserver stored for `name` after resourceVersion `since`, in
    order (a watch from `since` replays them): states are asserted on history, not
    caught live in a window a loaded machine can miss."""
    statuses: list[dict[str, Any]] = []
    for event in watch.Watch().stream(
        cluster.custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        ns,
        "meshagents",
        field_selector=f"metadata.name={name}",
        resource_version=since,
        timeout_seconds=1,  # the replay comes first; then the stream ends
    ):
        status = event["object"].get("status", {})
        if event["type"] == "MODIFIED" and (not statuses or status != statuses[-1]):
            statuses.append(status)  # (kopf's own annotation updates change no status)
    return statuses


def _states(history: list[dict[str, Any]]) -> list[tuple[str | None, tuple[str, str] | None]]:
    """(healthStatus, Ready (status, reason)) of each stored status, repeats folded."""
    states: list[tuple[str | None, tuple[str, str] | None]] = []
    for status in history:
        ready = next(
            (
                (c["status"], c["reason"])
                for c in status.get("conditions", [])
                if c["type"] == "Ready"
            ),
            None,
        )
        if not states or states[-1] != (status.get("healthStatus"), ready):
            states.append((status.get("healthStatus"), ready))
    return states


def _version(cluster: Cluster, ns: str, name: str) -> str:
    obj = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "meshagents", name)
    return str(obj["metadata"]["resourceVersion"])


def test_agent_goes_healthy_degraded_unreachable_and_healthy_again(
    cluster: Cluster, fast_operator: OperatorProcess, ns: str
) -> None:
    token = token_of(cluster, fast_operator, ns, "cycler", "worker")
    assert _health(cluster, ns, "cycler") == "pending"
    since = _version(cluster, ns, "cycler")
    assert _beat(fast_operator, ns, "cycler", token, activeTasks=2).status_code == 200
    # unreachable is where an unbeaten agent stays: a condition, not a window
    wait_for("unreachable", lambda: _health(cluster, ns, "cycler") == "unreachable", timeout=20)
    assert _beat(fast_operator, ns, "cycler", token).status_code == 200
    expected = [
        ("healthy", ("True", "AgentHealthy")),
        ("degraded", ("False", "AgentDegraded")),
        ("unreachable", ("False", "AgentUnreachable")),
        ("healthy", ("True", "AgentHealthy")),
    ]
    history = wait_for(
        "the status history to show every transition",
        lambda: (h := _history(cluster, ns, "cycler", since)) and _states(h) == expected and h,
    )
    assert history[0]["activeTasks"] == 2
    assert history[0]["lastSeen"]

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
    since = _version(cluster, ns, "chatty")
    with httpx.Client(
        base_url=fast_operator.mesh_url, timeout=10, verify=fast_operator.tls
    ) as http:
        for beats in range(60):
            response = http.post(
                f"/v1/agents/{ns}/chatty/heartbeat",
                json={"activeTasks": beats % 3},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200
    wait_for("the first beat's write", lambda: _health(cluster, ns, "chatty") != "pending")
    # 60 beats, one write: the transition to healthy (the next lastSeen write is due after
    # 30 s). A machine so slow that 2 s pass between two beats makes the agent degraded in
    # between: then each healthy write follows a transition, never another healthy write.
    health = [status.get("healthStatus") for status in _history(cluster, ns, "chatty", since)]
    assert health[0] == "healthy", health
    assert "pending" not in health, health
    healthy_twice = [pair for pair in itertools.pairwise(health) if pair == ("healthy",) * 2]
    assert not healthy_twice, health


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
    beating = threading.Event()

    def keep_fresh() -> None:  # fresh beats throughout: healthy whenever the table is read
        while not beating.wait(0.2):
            _beat(fast_operator, ns, "fresh", tokens["fresh"], activeTasks=4)

    def fleet_as_wanted() -> bool:
        return (
            _health(cluster, ns, "fresh") == "healthy"
            and _health(cluster, ns, "stale") == "degraded"
        )

    beater = threading.Thread(target=keep_fresh)
    beater.start()
    try:
        table = None
        for _attempt in range(5):
            _beat(fast_operator, ns, "stale", tokens["stale"], activeTasks=1)
            wait_for("fresh healthy and stale degraded", fleet_as_wanted, timeout=10)
            # stale's 2 s of degraded is a window: freeze the operator (the only writer of
            # status) and read the table only if stale is still degraded once frozen, so
            # what kubectl shows stays put however slow the machine is; else beat again
            os.kill(fast_operator.pid, signal.SIGSTOP)
            try:
                if fleet_as_wanted():
                    table = cluster.kubectl("get", "meshagents", "-n", ns, "-o", "wide").stdout
                    break
            finally:
                os.kill(fast_operator.pid, signal.SIGCONT)
        assert table is not None, "stale never stayed degraded until the operator was frozen"
    finally:
        beating.set()
        beater.join()
    print(table)
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert rows["fresh"][1:4] == ["worker", "healthy", "4"]
    assert rows["stale"][2] == "degraded"
    assert rows["gone"][2] == "unreachable"
    assert rows["silent"][2] == "pending"
