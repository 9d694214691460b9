"""Routing: candidates, strategies, alternatives on retry, and why a task gets no agent."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from agent_mesh.api.meshagent import agent_record
from agent_mesh.api.meshtask import MeshTaskReason
from agent_mesh.domain import routing
from agent_mesh.domain.agents import AgentRecord
from agent_mesh.domain.health import HealthStatus
from agent_mesh.domain.routing import (
    BuiltinStrategy,
    Candidate,
    Router,
    TaskDemand,
)
from agent_mesh.runtime import plugins
from agent_mesh.runtime.plugins import load_strategies
from tests.support.routing import Cheapest, FakeEntryPoint, agent, task

H, D, U, P = (
    HealthStatus.HEALTHY,
    HealthStatus.DEGRADED,
    HealthStatus.UNREACHABLE,
    HealthStatus.PENDING,
)
LEAST, ROUND, MATCH, RANDOM = (
    BuiltinStrategy.LEAST_LOADED,
    BuiltinStrategy.ROUND_ROBIN,
    BuiltinStrategy.CAPABILITY_MATCH,
    BuiltinStrategy.RANDOM,
)


def router_with(*records: AgentRecord, **kw: Any) -> Router:
    router = Router(rng=random.Random(1), **kw)
    for record in records:
        router.upsert(record)
    return router


# -- candidates -----------------------------------------------------------------------


def test_only_healthy_agents_with_every_capability_are_candidates() -> None:
    router = router_with(
        agent("both", "summarize", "review"),
        agent("one", "summarize"),
        agent("degraded", "summarize", "review", health=D),
        agent("unreachable", "summarize", "review", health=U),
        agent("pending", "summarize", "review", health=P),
        agent("no-status", "summarize", "review", health=None),
    )
    assert router.candidates(task("summarize", "review")) == ["both"]
    assert router.candidates(task("summarize")) == ["both", "one"]
    assert router.candidates(task()) == ["both", "one"]


def test_an_agent_that_recovers_gets_work_again() -> None:
    router = router_with(agent("a", "x", health=D))
    assert router.route(task("x")).reason is MeshTaskReason.NO_HEALTHY_AGENT
    router.set_health("ns", "a", H)
    assert router.route(task("x")).agent_id == "a"
    router.set_health("ns", "a", U)
    assert router.route(task("x")).agent_id is None


def test_an_agent_at_its_limit_gets_no_new_task_until_one_ends() -> None:
    router = router_with(agent("a", "x", limit=2))
    assert router.route_and_assign(task("x")).agent_id == "a"
    assert router.route_and_assign(task("x")).agent_id == "a"
    busy = router.route(task("x"))
    assert busy.agent_id is None and busy.reason is MeshTaskReason.ALL_AGENTS_BUSY
    assert "maxConcurrentTasks" in busy.message
    router.release("ns", "a")
    assert router.route(task("x")).agent_id == "a"


def test_route_alone_assigns_nothing() -> None:
    router = router_with(agent("a", "x", limit=1))
    for _ in range(3):
        assert router.route(task("x")).agent_id == "a"
    assert router.load("ns", "a") == 0


def test_heartbeat_load_replaces_the_routers_count() -> None:
    router = router_with(agent("a", "x", limit=3))
    router.assign("ns", "a")
    router.observe_load("ns", "a", 3)
    assert router.load("ns", "a") == 3
    assert router.route(task("x")).reason is MeshTaskReason.ALL_AGENTS_BUSY
    router.observe_load("ns", "a", 0)
    assert router.route(task("x")).agent_id == "a"


def test_load_of_a_new_agent_is_seeded_from_its_status() -> None:
    router = router_with(agent("a", "x", limit=4, active=4), agent("b", "x", active=1))
    assert router.load("ns", "a") == 4
    assert router.route(task("x")).agent_id == "b"


def test_release_never_goes_below_zero_and_unknown_agents_are_ignored() -> None:
    router = router_with(agent("a", "x"))
    assert router.release("ns", "a")
    assert router.load("ns", "a") == 0
    assert not router.assign("ns", "ghost")
    assert not router.set_health("other", "a", D)
    assert not router.remove("ns", "ghost")
    assert router.load("ns", "ghost") is None


def test_namespaces_do_not_see_each_others_agents() -> None:
    router = router_with(agent("a", "x", namespace="team-a"), agent("b", "x", namespace="team-b"))
    assert router.route(task("x", namespace="team-a")).agent_id == "a"
    assert router.route(task("x", namespace="team-b")).agent_id == "b"
    nowhere = router.route(task("x", namespace="team-c"))
    assert nowhere.reason is MeshTaskReason.NO_CAPABLE_AGENT
    assert "namespace team-c" in nowhere.message


def test_a_removed_agent_gets_no_work() -> None:
    router = router_with(agent("a", "x"), agent("b", "x"))
    assert router.remove("ns", "a")
    assert router.candidates(task("x")) == ["b"]
    assert router.remove("ns", "b")
    assert router.route(task("x")).reason is MeshTaskReason.NO_CAPABLE_AGENT
    assert len(router) == 0


def test_an_updated_spec_is_reindexed_and_health_and_load_are_kept() -> None:
    router = router_with(agent("a", "x", limit=5))
    router.assign("ns", "a")
    router.upsert(agent("a", "y", limit=5, health=P))  # status in the event is older
    assert router.candidates(task("x")) == []
    assert router.candidates(task("y")) == ["a"]
    assert router.load("ns", "a") == 1


# -- selector -------------------------------------------------------------------------


def test_selector_by_agent_type() -> None:
    router = router_with(agent("w", "review"), agent("c", "review", agent_type="critic"))
    assert router.route(task("review", agent_type="critic")).agent_id == "c"
    none = router.route(task("review", agent_type="governor"))
    assert none.reason is MeshTaskReason.NO_MATCHING_AGENT
    assert "agentType=governor" in none.message


def test_selector_by_labels_needs_all_of_them() -> None:
    router = router_with(
        agent("a", "x", labels={"team": "a"}),
        agent("ab", "x", labels={"team": "a", "tier": "gold"}),
        agent("b", "x", labels={"team": "b", "tier": "gold"}),
    )
    assert router.candidates(task("x", labels={"team": "a"})) == ["a", "ab"]
    assert router.candidates(task("x", labels={"team": "a", "tier": "gold"})) == ["ab"]
    none = router.route(task("x", labels={"team": "c"}))
    assert none.reason is MeshTaskReason.NO_MATCHING_AGENT
    assert "labels team=c" in none.message


def test_agent_labels_come_from_metadata() -> None:
    record = agent_record(
        {
            "metadata": {"name": "a", "namespace": "ns", "uid": "u", "labels": {"team": "a"}},
            "spec": {"agentType": "worker", "capabilities": ["x"]},
            "status": {"healthStatus": "healthy"},
        }
    )
    assert record.labels == {"team": "a"}
    router = router_with(record)
    assert router.route(task("x", labels={"team": "a"})).agent_id == "a"


def test_agent_ref_pins_the_task_to_one_meshagent_by_name() -> None:
    router = router_with(agent("id-1", "x", name="alpha"), agent("id-2", "x", name="beta"))
    for strategy in BuiltinStrategy:
        assert router.route(task("x", agent_ref="beta", strategy=strategy)).agent_id == "id-2"


def test_a_pinned_agent_that_is_busy_or_unhealthy_makes_the_task_wait() -> None:
    router = router_with(agent("a", "x", limit=1), agent("b", "x"))
    router.assign("ns", "a")
    assert router.route(task("x", agent_ref="a")).reason is MeshTaskReason.ALL_AGENTS_BUSY
    router.release("ns", "a")
    router.set_health("ns", "a", D)
    waiting = router.route(task("x", agent_ref="a"))
    assert waiting.reason is MeshTaskReason.NO_HEALTHY_AGENT
    assert "1 degraded" in waiting.message


def test_a_pin_to_a_missing_or_incapable_agent_says_so() -> None:
    router = router_with(agent("a", "x"))
    missing = router.route(task("x", agent_ref="zed"))
    assert missing.reason is MeshTaskReason.NO_MATCHING_AGENT
    assert "agentRef zed" in missing.message
    router.upsert(agent("b", "y"))
    lacking = router.route(task("x", agent_ref="b"))
    assert lacking.reason is MeshTaskReason.NO_MATCHING_AGENT
    assert "lacks x" in lacking.message


# -- strategies -----------------------------------------------------------------------


def test_least_loaded_is_the_default_and_follows_the_load() -> None:
    router = router_with(agent("a", "x", active=3), agent("b", "x", active=1), agent("c", "x"))
    first = router.route(task("x"))
    assert (first.agent_id, first.strategy) == ("c", LEAST)
    router.observe_load("ns", "c", 5)
    assert router.route(task("x")).agent_id == "b"
    router.observe_load("ns", "a", 0)
    assert router.route(task("x")).agent_id == "a"


def test_least_loaded_spreads_a_burst_evenly() -> None:
    router = router_with(*(agent(f"a{i}", "x") for i in range(4)))
    for _ in range(12):
        router.route_and_assign(task("x", strategy=LEAST))
    assert [router.load("ns", f"a{i}") for i in range(4)] == [3, 3, 3, 3]


def test_round_robin_takes_turns_in_agent_id_order() -> None:
    router = router_with(*(agent(f"a{i}", "x") for i in range(4)))
    picks = [router.route(task("x", strategy=ROUND)).agent_id for _ in range(8)]
    assert picks == ["a0", "a1", "a2", "a3", "a0", "a1", "a2", "a3"]


def test_round_robin_is_even_over_many_picks_and_skips_unavailable_agents() -> None:
    router = router_with(*(agent(f"a{i}", "x") for i in range(5)))
    router.set_health("ns", "a2", D)
    counts = Counter(router.route(task("x", strategy=ROUND)).agent_id for _ in range(400))
    assert counts == {"a0": 100, "a1": 100, "a3": 100, "a4": 100}


def test_round_robin_keeps_one_turn_per_capability_set() -> None:
    router = router_with(agent("a", "x", "y"), agent("b", "x", "y"), agent("c", "x"))
    xs = [router.route(task("x", strategy=ROUND)).agent_id for _ in range(3)]
    xys = [router.route(task("x", "y", strategy=ROUND)).agent_id for _ in range(2)]
    assert xs == ["a", "b", "c"]
    assert xys == ["a", "b"]


def test_capability_match_prefers_the_most_exact_agent_then_the_least_loaded() -> None:
    router = router_with(
        agent("generalist", "x", "y", "z"),
        agent("exact-busy", "x", "y", active=4),
        agent("exact-idle", "x", "y", active=1),
        agent("partial", "x"),
    )
    assert router.route(task("x", "y", strategy=MATCH)).agent_id == "exact-idle"
    router.observe_load("ns", "exact-idle", 10)
    assert router.route(task("x", "y", strategy=MATCH)).agent_id == "exact-busy"
    router.observe_load("ns", "exact-busy", 10)
    assert router.route(task("x", "y", strategy=MATCH)).agent_id == "generalist"
    assert router.route(task("x", strategy=MATCH)).agent_id == "partial"


def test_random_covers_every_candidate_and_is_reproducible_with_a_seed() -> None:
    records = [agent(f"a{i}", "x") for i in range(5)] + [agent("other", "y")]

    def picks(seed: int) -> list[str | None]:
        router = Router(rng=random.Random(seed))
        for record in records:
            router.upsert(record)
        return [router.route(task("x", strategy=RANDOM)).agent_id for _ in range(2000)]

    counts = Counter(picks(42))
    assert set(counts) == {f"a{i}" for i in range(5)}
    assert all(300 < n < 500 for n in counts.values()), counts
    assert picks(42) == picks(42)


def test_random_finds_the_rare_candidate_among_many_that_do_not_fit() -> None:
    router = router_with(
        *(agent(f"w{i}", "x") for i in range(200)), agent("gold", "x", labels={"t": "g"})
    )
    assert router.route(task("x", strategy=RANDOM, labels={"t": "g"})).agent_id == "gold"


@pytest.mark.parametrize("strategy", list(BuiltinStrategy))
def test_a_retry_goes_to_an_agent_not_tried_yet(strategy: str) -> None:
    router = router_with(agent("a", "x"), agent("b", "x"), agent("c", "x", active=5))
    tried: set[str] = set()
    for _ in range(3):
        decision = router.route(task("x", strategy=strategy, exclude=frozenset(tried)))
        assert decision.agent_id is not None and decision.agent_id not in tried
        assert not decision.fallback
        tried.add(decision.agent_id)
    assert tried == {"a", "b", "c"}


@pytest.mark.parametrize("strategy", list(BuiltinStrategy))
def test_a_retry_falls_back_to_a_tried_agent_when_it_is_the_only_one(strategy: str) -> None:
    router = router_with(agent("a", "x"), agent("b", "x", health=U))
    decision = router.route(task("x", strategy=strategy, exclude=frozenset({"a"})))
    assert decision.agent_id == "a"
    assert decision.fallback
    assert "already tried" in decision.message


def test_least_loaded_prefers_an_untried_agent_even_when_busier() -> None:
    router = router_with(agent("idle", "x"), agent("busy", "x", active=8))
    decision = router.route(task("x", exclude=frozenset({"idle"})))
    assert decision.agent_id == "busy"


# -- why no agent ---------------------------------------------------------------------


def test_no_agent_with_the_capability_names_the_missing_one() -> None:
    router = router_with(agent("a", "summarize"))
    decision = router.route(task("summarize", "translate", "ocr"))
    assert decision.reason is MeshTaskReason.NO_CAPABLE_AGENT
    assert decision.missing_capabilities == ("ocr", "translate")
    assert decision.message == "no agent in namespace ns has capability ocr (nor translate)"


def test_capabilities_spread_over_agents_but_never_together_is_no_capable_agent() -> None:
    router = router_with(agent("a", "x"), agent("b", "y"))
    decision = router.route(task("x", "y"))
    assert decision.reason is MeshTaskReason.NO_CAPABLE_AGENT
    assert decision.missing_capabilities == ()
    assert "all of the capabilities x, y" in decision.message


def test_capable_agents_none_healthy_counts_their_states() -> None:
    router = router_with(
        agent("a", "x", health=D), agent("b", "x", health=D), agent("c", "x", health=U)
    )
    decision = router.route(task("x"))
    assert decision.reason is MeshTaskReason.NO_HEALTHY_AGENT
    assert decision.message == (
        "3 capable agents in namespace ns, none healthy (2 degraded, 1 unreachable)"
    )


def test_reasons_are_meshtask_condition_reasons() -> None:
    assert {r.value for r in MeshTaskReason} <= {r.value for r in MeshTaskReason}


def test_a_remembered_dead_end_clears_when_an_agent_arrives_or_recovers() -> None:
    router = router_with(agent("a", "x", labels={"team": "b"}), agent("d", "x", health=D))
    assert router.route(task("x", labels={"team": "a"})).reason is MeshTaskReason.NO_MATCHING_AGENT
    router.upsert(agent("n", "x", labels={"team": "a"}))
    assert router.route(task("x", labels={"team": "a"})).agent_id == "n"
    assert router.route(task("x", agent_ref="d")).reason is MeshTaskReason.NO_HEALTHY_AGENT
    router.set_health("ns", "d", H)
    assert router.route(task("x", agent_ref="d")).agent_id == "d"


def test_unknown_strategy_is_named_with_the_known_ones() -> None:
    router = router_with(agent("a", "x"), plugins={})
    decision = router.route(task("x", strategy="fastest"))
    assert decision.reason is MeshTaskReason.UNKNOWN_STRATEGY
    assert decision.message == (
        "unknown strategy 'fastest'; known: capability-match, least-loaded, random, round-robin"
    )


def test_the_operator_default_strategy_applies_when_the_task_names_none() -> None:
    router = router_with(agent("a", "x"), agent("b", "x"), default_strategy=ROUND)
    assert [router.route(task("x")).agent_id for _ in range(3)] == ["a", "b", "a"]


def test_a_task_demand_accepts_lists() -> None:
    demand = TaskDemand("ns", "t", ["x", "y"], exclude=["a"])  # type: ignore[arg-type]
    assert demand.required_capabilities == frozenset({"x", "y"})
    assert demand.exclude == frozenset({"a"})


# -- plug-ins -------------------------------------------------------------------------


class ReturnsCandidate:
    def select(self, candidates: Sequence[Candidate], task: TaskDemand) -> Candidate:
        return candidates[-1]


class Raises:
    def select(self, candidates: Sequence[Candidate], task: TaskDemand) -> str:
        raise RuntimeError("pricing service down")


class Stranger:
    def select(self, candidates: Sequence[Candidate], task: TaskDemand) -> str:
        return "not-an-agent"


class Declines:
    def select(self, candidates: Sequence[Candidate], task: TaskDemand) -> None:
        return None


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> list[FakeEntryPoint]:
    points: list[FakeEntryPoint] = []

    def entry_points(*, group: str) -> list[FakeEntryPoint]:
        assert group == "agent_mesh.strategies"
        return points

    monkeypatch.setattr(plugins, "entry_points", entry_points)
    return points


def with_plugins(*records: AgentRecord) -> Router:
    """A router that finds plug-ins as the operator's does (runtime.plugins)."""
    return router_with(*records, load_plugins=load_strategies)


def test_a_plugin_strategy_from_an_entry_point_is_used_when_a_task_names_it(
    installed: list[FakeEntryPoint],
) -> None:
    installed.append(FakeEntryPoint("cheapest", Cheapest))
    router = with_plugins(
        agent("a", "x", labels={"cost": "5"}),
        agent("b", "x", labels={"cost": "2"}),
        agent("c", "x", labels={"cost": "1"}, health=D),
    )
    Cheapest.seen.clear()
    decision = router.route(task("x", strategy="cheapest"))
    assert (decision.agent_id, decision.strategy) == ("b", "cheapest")
    assert Cheapest.seen == [["a", "b"]]  # healthy, free candidates only, by agentId
    assert router.route(task("x")).agent_id == "a"  # others still use the default
    assert "cheapest" in router.known_strategies()


def test_a_plugin_sees_tried_agents_only_when_no_other_is_left(
    installed: list[FakeEntryPoint],
) -> None:
    installed.append(FakeEntryPoint("cheapest", Cheapest()))  # an instance works too
    router = with_plugins(agent("a", "x", labels={"cost": "1"}), agent("b", "x"))
    Cheapest.seen.clear()
    assert router.route(task("x", strategy="cheapest", exclude=frozenset({"a"}))).agent_id == "b"
    assert router.route(task("x", strategy="cheapest", exclude=frozenset({"a", "b"}))).fallback
    assert Cheapest.seen == [["b"], ["a", "b"]]


def test_a_plugin_may_return_the_candidate_itself(installed: list[FakeEntryPoint]) -> None:
    installed.append(FakeEntryPoint("last", ReturnsCandidate))
    router = with_plugins(agent("a", "x"), agent("b", "x"))
    assert router.route(task("x", strategy="last")).agent_id == "b"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (Raises, "strategy 'broken' raised RuntimeError: pricing service down"),
        (Stranger, "strategy 'broken' returned 'not-an-agent', which is not one of its 2"),
        (ImportError("No module named 'plugin'"), "failed to load: ImportError: No module"),
        (object(), "failed to load: TypeError: it has no select(candidates, task) method"),
    ],
    ids=["raises", "returns-a-stranger", "import-fails", "no-select"],
)
def test_a_broken_plugin_is_a_clear_reason_not_a_crash(
    installed: list[FakeEntryPoint], target: Any, expected: str
) -> None:
    installed.append(FakeEntryPoint("broken", target))
    router = with_plugins(agent("a", "x"), agent("b", "x"))
    decision = router.route(task("x", strategy="broken"))
    assert decision.agent_id is None
    assert decision.reason is MeshTaskReason.STRATEGY_FAILED
    assert expected in decision.message
    assert router.route(task("x")).agent_id == "a"  # the router still works


def test_a_plugin_that_chooses_nobody_leaves_the_task_waiting(
    installed: list[FakeEntryPoint],
) -> None:
    installed.append(FakeEntryPoint("picky", Declines))
    router = with_plugins(agent("a", "x"))
    decision = router.route(task("x", strategy="picky"))
    assert decision.reason is MeshTaskReason.NO_MATCHING_AGENT
    assert decision.message == "strategy 'picky' chose none of 1 candidate"


def test_a_plugin_cannot_take_over_a_builtin_name(installed: list[FakeEntryPoint]) -> None:
    installed.append(FakeEntryPoint("least-loaded", Stranger))
    router = with_plugins(agent("a", "x"))
    assert router.route(task("x", strategy="least-loaded")).agent_id == "a"


def test_a_router_given_no_plugin_loader_knows_only_the_builtin_strategies(
    installed: list[FakeEntryPoint],
) -> None:
    installed.append(FakeEntryPoint("cheapest", Cheapest))
    router = router_with(agent("a", "x"))  # the domain alone discovers nothing
    decision = router.route(task("x", strategy="cheapest"))
    assert decision.reason is MeshTaskReason.UNKNOWN_STRATEGY
    assert "cheapest" not in router.known_strategies()


# -- property: the index agrees with a brute-force filter ----------------------------


@dataclass
class Model:
    record: AgentRecord
    health: HealthStatus
    active: int


def brute_candidates(fleet: dict[tuple[str, str], Model], t: TaskDemand) -> list[Model]:
    out = []
    for (namespace, _), m in sorted(fleet.items()):
        r = m.record
        if (
            namespace == t.namespace
            and set(r.capabilities) >= t.required_capabilities
            and (t.agent_type is None or r.agent_type == t.agent_type)
            and (t.agent_ref is None or r.name == t.agent_ref)
            and all(r.labels.get(k) == v for k, v in t.labels.items())
            and m.health is H
            and m.active < r.max_concurrent_tasks
        ):
            out.append(m)
    return out


def brute_reason(fleet: dict[tuple[str, str], Model], t: TaskDemand) -> MeshTaskReason:
    agents = [m for (ns, _), m in fleet.items() if ns == t.namespace]
    held = {c for m in agents for c in m.record.capabilities}
    if not agents or t.required_capabilities - held:
        return MeshTaskReason.NO_CAPABLE_AGENT
    if t.agent_ref is not None:
        pinned = [m for m in agents if m.record.name == t.agent_ref]
        if not pinned or not set(pinned[0].record.capabilities) >= t.required_capabilities:
            return MeshTaskReason.NO_MATCHING_AGENT
    capable = [m for m in agents if set(m.record.capabilities) >= t.required_capabilities]
    if not capable:
        return MeshTaskReason.NO_CAPABLE_AGENT
    matching = [
        m
        for m in capable
        if (t.agent_type is None or m.record.agent_type == t.agent_type)
        and (t.agent_ref is None or m.record.name == t.agent_ref)
        and all(m.record.labels.get(k) == v for k, v in t.labels.items())
    ]
    if not matching:
        return MeshTaskReason.NO_MATCHING_AGENT
    if not any(m.health is H for m in matching):
        return MeshTaskReason.NO_HEALTHY_AGENT
    return MeshTaskReason.ALL_AGENTS_BUSY


CAPS = ["a", "b", "c", "d"]
TYPES = ["worker", "critic"]


def random_record(rng: random.Random, namespace: str, i: int) -> AgentRecord:
    return agent(
        f"ag{i}",
        *rng.sample(CAPS, rng.randint(0, 3)),
        namespace=namespace,
        agent_type=rng.choice(TYPES),
        health=rng.choice([H, H, H, D, U, P, None]),
        limit=rng.randint(1, 3),
        active=rng.randint(0, 3),
        labels={"team": rng.choice("xy")} if rng.random() < 0.7 else {},
        name=f"name-{i}",
    )


def random_task(rng: random.Random, strategy: str) -> TaskDemand:
    return TaskDemand(
        rng.choice(["ns1", "ns2"] * 5 + ["ns3"]),
        "t",
        frozenset(rng.sample(CAPS, rng.choice([0, 1, 1, 1, 2])))
        | ({"zz"} if rng.random() < 0.05 else set()),
        agent_type=rng.choice([None, None, "critic", "governor"]),
        labels={"team": rng.choice("xyz")} if rng.random() < 0.2 else {},
        agent_ref=f"name-{rng.randrange(25)}" if rng.random() < 0.1 else None,
        strategy=strategy,
        exclude=frozenset(f"ag{rng.randrange(25)}" for _ in range(rng.randint(0, 3))),
    )


@pytest.mark.parametrize("seed", range(8))
def test_routing_agrees_with_a_brute_force_filter_under_random_changes(seed: int) -> None:
    agree_with_brute_force(seed)


@pytest.mark.parametrize("seed", range(3))
def test_routing_agrees_with_brute_force_when_few_pools_are_kept(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routing, "POOLS_MAX", 3)  # pools are evicted and rebuilt all along
    agree_with_brute_force(100 + seed)


def agree_with_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    router = Router(rng=random.Random(seed))
    fleet: dict[tuple[str, str], Model] = {}
    for step in range(1500):
        namespace, i = rng.choice(["ns1", "ns2"]), rng.randrange(25)
        key = (namespace, f"ag{i}")
        known = fleet.get(key)
        op = rng.random()
        if op < 0.15 or known is None:
            record = random_record(rng, namespace, i)
            router.upsert(record)
            if known is None:
                fleet[key] = Model(record, record.health or P, max(0, record.active_tasks))
            else:
                known.record = record
        elif op < 0.2:
            assert router.remove(namespace, f"ag{i}")
            del fleet[key]
        elif op < 0.4:
            known.health = rng.choice([H, H, D, U, P])
            router.set_health(namespace, f"ag{i}", known.health)
        elif op < 0.6:
            router.assign(namespace, f"ag{i}")
            known.active += 1
        elif op < 0.8:
            router.release(namespace, f"ag{i}")
            known.active = max(0, known.active - 1)
        else:
            known.active = rng.randint(0, 4)
            router.observe_load(namespace, f"ag{i}", known.active)

        strategy = rng.choice(list(BuiltinStrategy))
        t = random_task(rng, strategy)
        candidates = brute_candidates(fleet, t)
        assert router.candidates(t) == [m.record.agent_id for m in candidates], step
        decision = router.route(t)
        if not candidates:
            assert decision.agent_id is None, step
            assert decision.reason is brute_reason(fleet, t), (step, decision)
            continue
        fresh = [m for m in candidates if m.record.agent_id not in t.exclude] or candidates
        chosen = next((m for m in fresh if m.record.agent_id == decision.agent_id), None)
        assert chosen is not None, (step, decision, [m.record.agent_id for m in fresh])
        if strategy == LEAST:
            assert chosen.active == min(m.active for m in fresh), step
        elif strategy == MATCH:
            fit = min((len(set(m.record.capabilities)), m.active) for m in fresh)
            assert (len(set(chosen.record.capabilities)), chosen.active) == fit, step
