"""Discovery answers from indexes; on random fleets it must equal a brute-force scan."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from agent_mesh.domain.agents import AgentRecord, AgentRegistry
from agent_mesh.domain.clock import FakeClock
from agent_mesh.domain.discovery import AgentQuery, discover, resolve_endpoint
from agent_mesh.domain.health import HealthStatus, HealthTracker

CAPABILITIES = ["summarize", "review", "search", "code", "translate", "plan"]
TYPES = ["worker", "critic", "monitor", "researcher"]
NAMESPACES = ["a", "b", "c"]


def record(ns: str, agent_id: str, agent_type: str, caps: tuple[str, ...]) -> AgentRecord:
    return AgentRecord(
        ns, agent_id, f"uid-{ns}-{agent_id}", agent_id, agent_type, caps, None, None, False
    )


def random_fleet(
    rng: random.Random, size: int
) -> tuple[AgentRegistry, HealthTracker, list[AgentRecord]]:
    clock = FakeClock()
    registry, tracker = AgentRegistry(), HealthTracker()
    records = []
    for i in range(size):
        caps = tuple(rng.sample(CAPABILITIES, rng.randint(0, 4)))
        rec = record(rng.choice(NAMESPACES), f"agent-{i}", rng.choice(TYPES), caps)
        registry.upsert(rec)
        records.append(rec)
        age = rng.choice([None, 1, 90, 400])
        if age is not None:
            tracker.beat((rec.namespace, rec.agent_id), clock.now() - dt.timedelta(seconds=age), 0)
    tracker.sweep(clock.now())
    # churn: remove and re-type some, as watch events would
    for rec in rng.sample(records, size // 10):
        registry.remove(rec.namespace, rec.name)
        tracker.forget((rec.namespace, rec.agent_id))
        records.remove(rec)
    for rec in rng.sample(records, size // 10):
        changed = record(
            rec.namespace, rec.agent_id, rng.choice(TYPES), tuple(rng.sample(CAPABILITIES, 2))
        )
        registry.upsert(changed)
        records[records.index(rec)] = changed
    return registry, tracker, records


def brute_force(records: list[AgentRecord], tracker: HealthTracker, q: AgentQuery) -> list[str]:
    out = []
    for rec in records:
        state = tracker.get((rec.namespace, rec.agent_id))
        health = state.health if state else HealthStatus.PENDING
        if (
            rec.namespace == q.namespace
            and set(q.capabilities) <= set(rec.capabilities)
            and (q.agent_type is None or rec.agent_type == q.agent_type)
            and (q.health is None or health is q.health)
        ):
            out.append(rec.agent_id)
    return sorted(out)


@pytest.mark.parametrize("seed", range(25))
def test_query_matches_a_brute_force_scan_on_random_fleets(seed: int) -> None:
    rng = random.Random(seed)
    registry, tracker, records = random_fleet(rng, rng.randint(0, 300))
    for _ in range(40):
        q = AgentQuery(
            namespace=rng.choice(NAMESPACES),
            capabilities=tuple(rng.sample(CAPABILITIES, rng.randint(0, 3))),
            agent_type=rng.choice([None, *TYPES]),
            health=rng.choice([None, *HealthStatus]),
        )
        got = sorted(v.record.agent_id for v in discover(registry, tracker, q))
        assert got == brute_force(records, tracker, q), q


def test_capabilities_match_all_of() -> None:
    registry, tracker = AgentRegistry(), HealthTracker()
    registry.upsert(record("a", "both", "worker", ("summarize", "review")))
    registry.upsert(record("a", "one", "worker", ("summarize",)))
    found = discover(registry, tracker, AgentQuery("a", ("summarize", "review")))
    assert [v.record.agent_id for v in found] == ["both"]


def test_endpoint_resolution_order() -> None:
    base = record("ns", "x", "worker", ())
    external = AgentRecord(**{**_fields(base), "endpoint": "http://10.0.0.1:1"})
    managed = AgentRecord(**{**_fields(base), "workload": True, "port": 9000})
    assert resolve_endpoint(external, "http://ignored") == "http://10.0.0.1:1"
    assert resolve_endpoint(managed, None) == "http://x.ns.svc:9000"
    assert resolve_endpoint(base, "http://127.0.0.1:7000") == "http://127.0.0.1:7000"


def _fields(rec: AgentRecord) -> dict[str, object]:
    return {f: getattr(rec, f) for f in rec.__dataclass_fields__}


def test_limit_returns_a_sorted_prefix_size_and_flags_truncation() -> None:
    registry, tracker = AgentRegistry(), HealthTracker()
    for i in range(50):
        registry.upsert(record("a", f"agent-{i:02d}", "worker", ("summarize",)))
    limited = discover(registry, tracker, AgentQuery("a", ("summarize",)), limit=10)
    assert len(limited) == 11  # one more than the limit: truncated
    ids = [v.record.agent_id for v in limited]
    assert ids == sorted(ids)
    assert len(discover(registry, tracker, AgentQuery("a", ("summarize",)), limit=100)) == 50
