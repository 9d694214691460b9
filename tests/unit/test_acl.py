"""The ACL engine against DESIGN §2: defaults, custom policies, denies, namespaces, conflicts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from agent_mesh.domain.acl import (
    DEFAULT_POLICIES,
    OPERATOR_AGENT_TYPE,
    OPERATOR_POLICY,
    Action,
    AdmitRule,
    BuiltinAgentType,
    MeshCall,
    Policy,
    PolicyIndex,
    Standing,
    evaluate,
    policy_from_spec,
    policy_to_spec,
)
from agent_mesh.domain.errors import ValidationError

NS = "team-a"
OTHER_NS = "team-b"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

# DESIGN §2, transcribed by hand: type -> (allowed actions, allowed resources, denied actions).
SEED_TABLE: dict[str, tuple[set[str], set[str], set[str]]] = {
    "orchestrator": ({"*"}, {"*"}, set()),
    "worker": ({"read", "execute"}, {"tasks", "results"}, {"admin"}),
    "monitor": ({"read"}, {"*"}, {"write", "execute", "admin"}),
    "integrator": ({"read", "write"}, {"integrations", "data"}, {"admin"}),
    "governor": ({"read", "write", "admin"}, {"policies", "acl", "audit"}, set()),
    "critic": ({"read", "write"}, {"reviews", "feedback", "metrics"}, {"admin"}),
}
ACTIONS = ["read", "write", "execute", "admin"]
SEED_RESOURCES = sorted({r for _, res, _ in SEED_TABLE.values() for r in res} - {"*"})
RESOURCES = [*SEED_RESOURCES, "agents", "something-else"]


def expected_by_table(agent_type: str, action: str, resource: str) -> bool:
    allowed_actions, allowed_resources, denied_actions = SEED_TABLE[agent_type]
    if action in denied_actions:
        return False
    action_ok = "*" in allowed_actions or action in allowed_actions
    resource_ok = "*" in allowed_resources or resource in allowed_resources
    return action_ok and resource_ok


def spec(agent_type: str, **lists: list[str]) -> dict[str, Any]:
    """A camelCase ACLPolicy spec: spec("worker", allowedActions=["read"], ...)."""
    return {"agentType": agent_type, **lists}


def index_with(*policies: tuple[str, str, dict[str, Any]]) -> PolicyIndex:
    """An index holding (namespace, name, spec) policies, created one second apart."""
    index = PolicyIndex()
    for i, (namespace, name, body) in enumerate(policies):
        index.upsert(
            namespace,
            name,
            T0 + dt.timedelta(seconds=i),
            policy_from_spec(namespace, name, body),
        )
    return index


def allow_all_but(**denied: list[str]) -> PolicyIndex:
    """An index with one policy for type "bot": every action on every resource, but what
    `denied` (deniedActions, deniedResources) takes back."""
    return index_with(
        (NS, "p", spec("bot", allowedActions=["*"], allowedResources=["*"], **denied))
    )


def admit(namespace: str = NS, **lists: list[str]) -> dict[str, Any]:
    """One spec.admit rule: admit(NS, agentTypes=["worker"], actions=[...], resources=[...])."""
    return {
        "namespace": namespace,
        "agentTypes": ["*"],
        "actions": ["*"],
        "resources": ["*"],
        **lists,
    }


def host(*rules: dict[str, Any], agent_type: str = "gatekeeper", **lists: list[str]) -> Any:
    """A policy in OTHER_NS carrying admit rules (its own type is beside the point)."""
    return (OTHER_NS, f"host-{agent_type}", spec(agent_type, admit=list(rules), **lists))


def allowed(index: PolicyIndex, agent_type: str, action: str, resource: str, **kw: str) -> bool:
    return index.decide(
        agent_type, kw.get("ns", NS), Action(action), resource, kw.get("to")
    ).allowed


# --- built-in defaults --------------------------------------------------------------------


def test_the_transcribed_table_covers_every_builtin_type() -> None:
    assert set(SEED_TABLE) == {t.value for t in BuiltinAgentType} == set(DEFAULT_POLICIES)


@pytest.mark.parametrize("resource", RESOURCES)
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("agent_type", list(SEED_TABLE))
def test_default_decision_matches_the_design_table(
    agent_type: str, action: str, resource: str
) -> None:
    decision = PolicyIndex().decide(agent_type, NS, Action(action), resource)
    assert decision.allowed is expected_by_table(agent_type, action, resource)
    assert decision.source == f"default:{agent_type}"
    assert agent_type in decision.reason
    assert f"{action} {resource}" in decision.reason


@pytest.mark.parametrize(
    ("agent_type", "action", "resource", "expected"),
    [
        ("worker", "execute", "tasks", True),
        ("worker", "read", "results", True),
        ("worker", "write", "tasks", False),
        ("worker", "admin", "acl", False),
        ("monitor", "read", "agents", True),
        ("monitor", "execute", "tasks", False),
        ("orchestrator", "admin", "something-else", True),
        ("orchestrator", "write", "events", True),
        ("governor", "admin", "acl", True),
        ("governor", "execute", "tasks", False),
        ("integrator", "write", "data", True),
        ("critic", "admin", "reviews", False),
    ],
)
def test_default_spot_checks(agent_type: str, action: str, resource: str, expected: bool) -> None:
    assert allowed(PolicyIndex(), agent_type, action, resource) is expected


def test_denied_default_names_the_rule_that_decided() -> None:
    decision = PolicyIndex().decide("worker", NS, Action.ADMIN, "acl")
    assert (
        decision.reason
        == "worker may not admin acl: denied by default:worker (deniedActions admin)"
    )


def test_allowed_default_names_the_rule_that_decided() -> None:
    decision = PolicyIndex().decide("worker", NS, Action.EXECUTE, "tasks")
    assert decision.allowed
    assert decision.reason == (
        "worker may execute tasks: allowed by default:worker "
        "(allowedActions execute, allowedResources tasks)"
    )


def test_resource_outside_the_allowed_list_is_named_in_the_reason() -> None:
    decision = PolicyIndex().decide("worker", NS, Action.READ, "acl")
    assert not decision.allowed
    assert "acl is not in allowedResources" in decision.reason


def test_default_policies_reach_only_their_own_namespace() -> None:
    assert all(p.namespace is None and not p.namespaces for p in DEFAULT_POLICIES.values())


# --- custom types and replaced defaults ---------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_custom_type_without_a_policy_is_denied_everything(action: str) -> None:
    decision = PolicyIndex().decide("researcher", NS, Action(action), "tasks")
    assert not decision.allowed
    assert decision.reason == "custom type researcher has no ACLPolicy in namespace team-a: denied"


def test_custom_type_with_a_policy_gets_what_the_policy_allows() -> None:
    index = index_with(
        (
            NS,
            "researcher-acl",
            spec("researcher", allowedActions=["read"], allowedResources=["data"]),
        )
    )
    decision = index.decide("researcher", NS, Action.READ, "data")
    assert decision.allowed
    assert decision.source == "policy team-a/researcher-acl"
    assert not allowed(index, "researcher", "write", "data")
    assert not allowed(index, "researcher", "read", "tasks")


def test_custom_policy_in_one_namespace_does_not_apply_in_another() -> None:
    index = index_with(
        (NS, "researcher-acl", spec("researcher", allowedActions=["*"], allowedResources=["*"]))
    )
    assert allowed(index, "researcher", "read", "data", ns=NS)
    decision = index.decide("researcher", OTHER_NS, Action.READ, "data")
    assert not decision.allowed
    assert "no ACLPolicy in namespace team-b" in decision.reason


def test_policy_for_a_builtin_type_replaces_its_defaults_in_that_namespace_only() -> None:
    index = index_with(
        (NS, "worker-acl", spec("worker", allowedActions=["read"], allowedResources=["data"]))
    )
    assert allowed(index, "worker", "read", "data", ns=NS)
    assert not allowed(index, "worker", "execute", "tasks", ns=NS)
    assert allowed(index, "worker", "execute", "tasks", ns=OTHER_NS)
    assert not allowed(index, "worker", "read", "data", ns=OTHER_NS)
    assert index.decide("worker", OTHER_NS, Action.READ, "tasks").source == "default:worker"


def test_policy_for_returns_policy_then_default_then_none() -> None:
    index = index_with((NS, "w", spec("worker", allowedActions=["read"])))
    policy = index.policy_for(NS, "worker")
    assert policy is not None
    assert policy.source == "policy team-a/w"
    assert index.policy_for(OTHER_NS, "worker") is DEFAULT_POLICIES["worker"]
    assert index.policy_for(NS, "researcher") is None


# --- deny beats allow ---------------------------------------------------------------------


@pytest.mark.parametrize("resource", ["tasks", "acl", "anything"])
def test_denied_action_beats_allow_all_on_every_resource(resource: str) -> None:
    index = allow_all_but(deniedActions=["execute"])
    assert not allowed(index, "bot", "execute", resource)
    assert allowed(index, "bot", "read", resource)


def test_denied_resources_alone_deny_every_action_on_them() -> None:
    index = allow_all_but(deniedResources=["acl"])
    for action in ACTIONS:
        assert not allowed(index, "bot", action, "acl")
        assert allowed(index, "bot", action, "tasks")
    reason = index.decide("bot", NS, Action.READ, "acl").reason
    assert reason == "bot may not read acl: denied by policy team-a/p (deniedResources acl)"


def test_denied_actions_with_denied_resources_deny_only_those_pairs() -> None:
    index = allow_all_but(deniedActions=["write", "admin"], deniedResources=["acl", "audit"])
    for action in ACTIONS:
        for resource in ["acl", "audit", "tasks"]:
            pair_denied = action in {"write", "admin"} and resource in {"acl", "audit"}
            assert allowed(index, "bot", action, resource) is not pair_denied, (action, resource)
    reason = index.decide("bot", NS, Action.ADMIN, "audit").reason
    assert "(deniedActions admin on deniedResources audit)" in reason


# --- wildcards ----------------------------------------------------------------------------


def test_wildcard_allowed_action_covers_every_action_on_listed_resources() -> None:
    index = index_with((NS, "p", spec("bot", allowedActions=["*"], allowedResources=["tasks"])))
    assert all(allowed(index, "bot", a, "tasks") for a in ACTIONS)
    assert not allowed(index, "bot", "read", "results")


def test_wildcard_allowed_resource_covers_every_resource_for_listed_actions() -> None:
    index = index_with((NS, "p", spec("bot", allowedActions=["read"], allowedResources=["*"])))
    assert all(allowed(index, "bot", "read", r) for r in RESOURCES)
    assert not allowed(index, "bot", "write", "tasks")


def test_wildcard_denied_action_denies_everything() -> None:
    index = allow_all_but(deniedActions=["*"])
    assert not any(allowed(index, "bot", a, r) for a in ACTIONS for r in RESOURCES)
    assert "(deniedActions *)" in index.decide("bot", NS, Action.READ, "tasks").reason


def test_wildcard_denied_resource_with_denied_actions_denies_those_actions_everywhere() -> None:
    index = allow_all_but(deniedActions=["admin"], deniedResources=["*"])
    assert not allowed(index, "bot", "admin", "tasks")
    assert allowed(index, "bot", "write", "tasks")


def test_empty_policy_allows_nothing() -> None:
    index = index_with((NS, "p", spec("bot")))
    assert not any(allowed(index, "bot", a, r) for a in ACTIONS for r in RESOURCES)


# --- namespaces ---------------------------------------------------------------------------


def test_default_policy_reaches_only_the_agents_own_namespace() -> None:
    index = index_with(host(admit(agentTypes=["orchestrator"])))
    assert allowed(index, "orchestrator", "read", "tasks", to=NS)
    decision = index.decide("orchestrator", NS, Action.READ, "tasks", OTHER_NS)
    assert not decision.allowed
    assert decision.reason.startswith("orchestrator in team-a may not reach namespace team-b")


def test_the_target_namespaces_consent_is_asked_first_then_reach_then_the_action() -> None:
    decision = PolicyIndex().decide("worker", NS, Action.READ, "acl", OTHER_NS)
    assert "namespace team-b has not consented" in decision.reason
    index = index_with(host(admit(agentTypes=["worker"])))
    decision = index.decide("worker", NS, Action.READ, "acl", OTHER_NS)
    assert decision.reason.startswith("worker in team-a may not reach namespace team-b")


def test_listed_namespace_is_reachable_with_its_consent_and_others_are_not() -> None:
    index = index_with(
        (
            NS,
            "p",
            spec(
                "worker",
                allowedActions=["read"],
                allowedResources=["tasks"],
                namespaces=[OTHER_NS],
            ),
        ),
        host(admit(agentTypes=["worker"], actions=["read", "write"], resources=["tasks"])),
    )
    decision = index.decide("worker", NS, Action.READ, "tasks", OTHER_NS)
    assert decision.allowed
    assert "in team-b" in decision.reason
    assert not allowed(index, "worker", "read", "tasks", to="team-c")
    assert not allowed(index, "worker", "write", "tasks", to=OTHER_NS)  # its own side refuses


def test_wildcard_namespace_reaches_only_namespaces_that_consent() -> None:
    index = index_with(
        (NS, "p", spec("bot", allowedActions=["read"], allowedResources=["*"], namespaces=["*"])),
        host(admit(agentTypes=["bot"], actions=["read"])),
    )
    assert allowed(index, "bot", "read", "tasks", to=NS)
    assert allowed(index, "bot", "read", "tasks", to=OTHER_NS)
    assert not allowed(index, "bot", "read", "tasks", to="x")


def test_reaching_another_namespace_needs_the_subjects_policy_not_the_targets() -> None:
    index = index_with(
        (
            OTHER_NS,
            "p",
            spec(
                "bot",
                allowedActions=["*"],
                allowedResources=["*"],
                namespaces=["*"],
                admit=[admit(agentTypes=["bot"])],
            ),
        )
    )
    decision = index.decide("bot", NS, Action.READ, "tasks", OTHER_NS)
    assert not decision.allowed  # team-b's policy for bot gives team-a's bots nothing
    assert "custom type bot has no ACLPolicy in namespace team-a" in decision.reason


# --- consent: the target namespace admits the caller (spec.admit) ---------------------------

REACHING_ORCHESTRATOR = (
    NS,
    "orchestrator",
    spec("orchestrator", allowedActions=["*"], allowedResources=["*"], namespaces=[OTHER_NS]),
)


def test_reach_without_consent_is_refused_naming_the_target_namespace() -> None:
    index = index_with(REACHING_ORCHESTRATOR)
    decision = index.decide("orchestrator", NS, Action.EXECUTE, "tasks", OTHER_NS)
    assert not decision.allowed
    assert decision.reason == (
        "orchestrator in team-a may not execute tasks in team-b: namespace team-b has not "
        "consented (no ACLPolicy in force there admits orchestrator agents from team-a to "
        "execute tasks in spec.admit)"
    )
    assert decision.source == "consent team-b"


def test_consent_without_reach_is_refused_naming_the_callers_policy() -> None:
    index = index_with(host(admit(agentTypes=["orchestrator"], actions=["execute"])))
    decision = index.decide("orchestrator", NS, Action.EXECUTE, "tasks", OTHER_NS)
    assert not decision.allowed
    assert decision.reason == (
        "orchestrator in team-a may not reach namespace team-b: denied by "
        "default:orchestrator (namespaces own only)"
    )


def test_reach_and_consent_together_allow_naming_both_policies() -> None:
    index = index_with(
        REACHING_ORCHESTRATOR,
        host(admit(agentTypes=["orchestrator"], actions=["execute"], resources=["tasks"])),
    )
    decision = index.decide("orchestrator", NS, Action.EXECUTE, "tasks", OTHER_NS)
    assert decision.allowed
    assert decision.reason == (
        "orchestrator in team-a may execute tasks in team-b: allowed by policy "
        "team-a/orchestrator (allowedActions *, allowedResources *); admitted by policy "
        "team-b/host-gatekeeper (admit[0])"
    )
    assert decision.source == "policy team-a/orchestrator + policy team-b/host-gatekeeper"


@pytest.mark.parametrize(
    ("agent_type", "action", "resource"),
    [
        ("worker", "execute", "tasks"),  # another type of team-a
        ("orchestrator", "read", "tasks"),  # another action
        ("orchestrator", "execute", "agents"),  # another resource
    ],
)
def test_consent_for_another_type_action_or_resource_is_refused(
    agent_type: str, action: str, resource: str
) -> None:
    index = index_with(
        REACHING_ORCHESTRATOR,
        (
            NS,
            "worker",
            spec("worker", allowedActions=["*"], allowedResources=["*"], namespaces=["*"]),
        ),
        host(admit(agentTypes=["orchestrator"], actions=["execute"], resources=["tasks"])),
    )
    decision = index.decide(agent_type, NS, Action(action), resource, OTHER_NS)
    assert not decision.allowed
    assert "namespace team-b has not consented" in decision.reason


def test_consent_given_to_another_namespace_does_not_admit_this_one() -> None:
    index = index_with(REACHING_ORCHESTRATOR, host(admit("team-c")))
    assert not allowed(index, "orchestrator", "execute", "tasks", to=OTHER_NS)
    assert index.admitted_namespaces(OTHER_NS) == {"team-c"}


def test_a_deny_in_the_target_namespace_beats_its_consent() -> None:
    index = index_with(
        REACHING_ORCHESTRATOR,
        host(
            admit(agentTypes=["orchestrator"]),
            agent_type="orchestrator",
            allowedActions=["*"],
            allowedResources=["*"],
            deniedActions=["admin"],
        ),
    )
    assert allowed(index, "orchestrator", "execute", "tasks", to=OTHER_NS)
    decision = index.decide("orchestrator", NS, Action.ADMIN, "tokens", OTHER_NS)
    assert not decision.allowed
    assert decision.reason == (
        "orchestrator in team-a may not admin tokens in team-b: namespace team-b refuses it, "
        "denied by policy team-b/host-orchestrator (deniedActions admin), which binds "
        "orchestrator agents from every namespace"
    )


def test_the_target_namespaces_defaults_for_the_type_bind_visitors() -> None:
    """team-a lets its workers administer tokens and team-b admits them, but team-b has no
    worker policy, so the built-in worker defaults there (deniedActions admin) still hold."""
    index = index_with(
        (NS, "w", spec("worker", allowedActions=["*"], allowedResources=["*"], namespaces=["*"])),
        host(admit(agentTypes=["worker"])),
    )
    decision = index.decide("worker", NS, Action.ADMIN, "tokens", OTHER_NS)
    assert not decision.allowed
    assert "denied by default:worker (deniedActions admin)" in decision.reason
    assert allowed(index, "worker", "execute", "tasks", to=OTHER_NS)


def test_a_deny_in_the_callers_own_policy_beats_the_targets_consent() -> None:
    index = index_with(
        (
            NS,
            "o",
            spec(
                "orchestrator",
                allowedActions=["*"],
                allowedResources=["*"],
                deniedResources=["audit"],
                namespaces=["*"],
            ),
        ),
        host(admit(agentTypes=["orchestrator"])),
    )
    decision = index.decide("orchestrator", NS, Action.READ, "audit", OTHER_NS)
    assert not decision.allowed
    assert "denied by policy team-a/o (deniedResources audit)" in decision.reason


def test_only_consent_of_a_policy_in_force_counts() -> None:
    index = index_with(
        REACHING_ORCHESTRATOR,
        (OTHER_NS, "first", spec("gatekeeper")),
        (OTHER_NS, "second", spec("gatekeeper", admit=[admit(agentTypes=["orchestrator"])])),
    )
    assert index.standing(OTHER_NS, "second").conflicts_with == "first"
    assert not allowed(index, "orchestrator", "execute", "tasks", to=OTHER_NS)
    index.remove(OTHER_NS, "first")  # the cached refusal must go with it
    assert allowed(index, "orchestrator", "execute", "tasks", to=OTHER_NS)


def test_withdrawing_consent_refuses_the_next_call() -> None:
    index = index_with(REACHING_ORCHESTRATOR, host(admit(agentTypes=["orchestrator"])))
    assert allowed(index, "orchestrator", "execute", "tasks", to=OTHER_NS)
    index.upsert(OTHER_NS, "host-gatekeeper", T0, policy_from_spec(OTHER_NS, "x", spec("gk")))
    assert not allowed(index, "orchestrator", "execute", "tasks", to=OTHER_NS)


def test_consent_rules_of_every_policy_in_force_add_up() -> None:
    index = index_with(
        REACHING_ORCHESTRATOR,
        host(admit(agentTypes=["orchestrator"], actions=["read"]), agent_type="a"),
        host(admit(agentTypes=["orchestrator"], actions=["execute"]), agent_type="b"),
    )
    assert allowed(index, "orchestrator", "read", "tasks", to=OTHER_NS)
    assert allowed(index, "orchestrator", "execute", "tasks", to=OTHER_NS)
    assert not allowed(index, "orchestrator", "write", "tasks", to=OTHER_NS)


def test_the_operators_identity_is_decided_by_its_fixed_policy_alone() -> None:
    """No admit rule can name mesh-operator, so consent is not asked of it (its tokens are
    bound to their recipient's namespace instead)."""
    decision = PolicyIndex().decide(OPERATOR_AGENT_TYPE, NS, Action.EXECUTE, "tasks", OTHER_NS)
    assert decision == evaluate(OPERATOR_POLICY, NS, Action.EXECUTE, "tasks", OTHER_NS)


def test_admitted_policies_are_the_callers_side_of_what_a_namespace_admits() -> None:
    index = index_with(
        REACHING_ORCHESTRATOR,
        (NS, "critic", spec("critic")),  # admitted type (reach or not, its rules decide)
        (NS, "worker", spec("worker", namespaces=[OTHER_NS])),  # reaches, type not admitted
        ("team-c", "o", spec("orchestrator", namespaces=["*"])),  # namespace not admitted
        host(admit(agentTypes=["orchestrator", "critic"])),
    )
    assert [(ns, name) for ns, name, _ in index.admitted_policies(OTHER_NS)] == [
        (NS, "critic"),
        (NS, "orchestrator"),
    ]
    assert index.admitted_policies(NS) == []


def test_a_subset_index_with_the_admitted_policies_decides_as_the_full_one() -> None:
    """What an agent's gate holds (its namespace's policies and the admitted ones) gives
    the operator's answers for every caller from elsewhere."""
    full = index_with(
        REACHING_ORCHESTRATOR,
        (NS, "critic", spec("critic", allowedActions=["read"], allowedResources=["*"])),
        (
            NS,
            "scout",
            spec("scout", allowedActions=["*"], allowedResources=["*"], namespaces=["*"]),
        ),
        host(
            admit(agentTypes=["orchestrator", "critic"]),
            agent_type="worker",
            deniedActions=["admin"],
        ),
    )
    subset = PolicyIndex()
    for name, policy in full.in_force(OTHER_NS):
        subset.upsert(OTHER_NS, name, T0, policy)
    for ns, name, policy in full.admitted_policies(OTHER_NS):
        subset.upsert(ns, name, T0, policy)
    for agent_type in ["orchestrator", "critic", "scout", "worker", "researcher"]:
        for action in ACTIONS:
            for resource in ["tasks", "agents", "audit"]:
                args = (agent_type, NS, Action(action), resource, OTHER_NS)
                assert subset.decide(*args) == full.decide(*args), args


# --- conflicts between policies for one type ----------------------------------------------


def test_oldest_policy_for_a_type_is_in_force_and_the_others_conflict() -> None:
    index = index_with(
        (NS, "first", spec("worker", allowedActions=["read"], allowedResources=["data"])),
        (NS, "second", spec("worker", allowedActions=["write"], allowedResources=["data"])),
    )
    assert index.standing(NS, "first") == Standing(in_force=True, conflicts_with=None)
    assert index.standing(NS, "second") == Standing(in_force=False, conflicts_with="first")
    assert allowed(index, "worker", "read", "data")
    assert not allowed(index, "worker", "write", "data")
    assert index.affected(NS, "worker") == ["first", "second"]


def test_equal_creation_times_are_broken_by_name() -> None:
    index = PolicyIndex()
    for name in ["zeta", "alpha"]:
        index.upsert(NS, name, T0, policy_from_spec(NS, name, spec("worker")))
    assert index.standing(NS, "alpha").in_force
    assert index.standing(NS, "zeta").conflicts_with == "alpha"


def test_removing_the_policy_in_force_promotes_the_next_oldest_and_changes_decisions() -> None:
    index = index_with(
        (NS, "first", spec("worker", allowedActions=["read"], allowedResources=["data"])),
        (NS, "second", spec("worker", allowedActions=["write"], allowedResources=["data"])),
        (NS, "third", spec("worker")),
    )
    assert allowed(index, "worker", "read", "data")  # now cached
    index.remove(NS, "first")
    assert index.standing(NS, "second").in_force
    assert index.standing(NS, "third").conflicts_with == "second"
    assert index.standing(NS, "first") == Standing(in_force=False, conflicts_with=None)
    assert not allowed(index, "worker", "read", "data")
    assert allowed(index, "worker", "write", "data")
    index.remove(NS, "second")
    index.remove(NS, "third")
    assert index.affected(NS, "worker") == []
    assert allowed(index, "worker", "execute", "tasks")  # back to the defaults


def test_updating_a_policy_changes_cached_decisions() -> None:
    index = index_with((NS, "p", spec("bot", allowedActions=["read"], allowedResources=["data"])))
    assert allowed(index, "bot", "read", "data")
    index.upsert(NS, "p", T0, policy_from_spec(NS, "p", spec("bot")))
    assert not allowed(index, "bot", "read", "data")


def test_changing_a_policys_agent_type_moves_it_and_frees_the_old_type() -> None:
    index = index_with(
        (NS, "p", spec("worker", allowedActions=["read"], allowedResources=["data"])),
        (NS, "q", spec("worker")),
    )
    index.upsert(NS, "p", T0, policy_from_spec(NS, "p", spec("critic")))
    assert index.affected(NS, "worker") == ["q"]
    assert index.affected(NS, "critic") == ["p"]
    assert index.standing(NS, "q").in_force
    assert index.standing(NS, "p").in_force


def test_removing_an_unknown_policy_is_harmless() -> None:
    index = PolicyIndex()
    index.remove(NS, "missing")
    assert index.standing(NS, "missing") == Standing(in_force=False, conflicts_with=None)


def test_decision_cache_stays_bounded() -> None:
    index = PolicyIndex()
    for i in range(70_000):
        index.decide("worker", f"ns-{i}", Action.READ, "tasks")
    assert len(index._cache) <= 65_536


# --- decide's arguments and policy_from_spec -----------------------------------------------


def test_decide_refuses_the_wildcard_action() -> None:
    with pytest.raises(ValueError, match="concrete action"):
        PolicyIndex().decide("worker", NS, Action.ALL, "tasks")


def test_policy_from_spec_reads_every_field() -> None:
    policy = policy_from_spec(
        NS,
        "p",
        {
            "agentType": "worker",
            "allowedActions": ["read", "*"],
            "allowedResources": ["tasks"],
            "deniedActions": ["admin"],
            "deniedResources": ["acl"],
            "namespaces": [OTHER_NS],
        },
    )
    assert policy == Policy(
        agent_type="worker",
        namespace=NS,
        allowed_actions=frozenset({Action.READ, Action.ALL}),
        allowed_resources=frozenset({"tasks"}),
        denied_actions=frozenset({Action.ADMIN}),
        denied_resources=frozenset({"acl"}),
        namespaces=frozenset({OTHER_NS}),
        source="policy team-a/p",
    )


def test_policy_from_spec_reads_admit_rules_and_writes_them_back() -> None:
    body = spec(
        "worker",
        admit=[
            admit(OTHER_NS, agentTypes=["orchestrator"], actions=["execute"], resources=["tasks"])
        ],
    )
    policy = policy_from_spec(NS, "p", body)
    assert policy.admit == (
        AdmitRule(
            namespace=OTHER_NS,
            agent_types=frozenset({"orchestrator"}),
            actions=frozenset({Action.EXECUTE}),
            resources=frozenset({"tasks"}),
        ),
    )
    assert policy_from_spec(NS, "p", policy_to_spec(policy)) == policy


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        ("team-b", "spec.admit[0]", "must be an object"),
        (
            {"agentTypes": ["*"], "actions": ["*"], "resources": ["*"]},
            "spec.admit[0].namespace",
            "required",
        ),
        (admit("*"), "spec.admit[0].namespace", "may not be '*'"),
        (admit(NS), "spec.admit[0].namespace", "own namespace"),
        (admit(OTHER_NS, agentTypes=[]), "spec.admit[0].agentTypes", "at least one"),
        (admit(OTHER_NS, actions=[]), "spec.admit[0].actions", "at least one"),
        (admit(OTHER_NS, resources=[]), "spec.admit[0].resources", "at least one"),
        (admit(OTHER_NS, actions=["delete"]), "spec.admit[0].actions[0]", "unknown action"),
        (
            admit(OTHER_NS, agentTypes=["mesh-operator"]),
            "spec.admit[0].agentTypes",
            "mesh-operator",
        ),
        (admit(OTHER_NS, resources="tasks"), "spec.admit[0].resources", "must be a list"),
    ],
)
def test_a_bad_admit_rule_names_its_field_and_the_rule(rule: Any, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        policy_from_spec(NS, "p", spec("worker", admit=[rule]))
    assert caught.value.field == field
    assert words in caught.value.message


def test_unknown_action_names_the_field_and_the_value() -> None:
    with pytest.raises(ValidationError) as caught:
        policy_from_spec(NS, "p", spec("worker", allowedActions=["read", "delete"]))
    assert caught.value.field == "spec.allowedActions[1]"
    assert caught.value.message == (
        "unknown action 'delete': must be one of read, write, execute, admin, *"
    )


def test_unknown_denied_action_names_its_field() -> None:
    with pytest.raises(ValidationError) as caught:
        policy_from_spec(NS, "p", spec("worker", deniedActions=["Admin"]))
    assert caught.value.field == "spec.deniedActions[0]"
    assert "'Admin'" in caught.value.message


@pytest.mark.parametrize("body", [{}, {"agentType": ""}, {"agentType": None}])
def test_missing_agent_type_names_the_field(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        policy_from_spec(NS, "p", body)
    assert caught.value.field == "spec.agentType"
    assert "required" in caught.value.message


def test_a_list_field_that_is_not_a_list_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        policy_from_spec(NS, "p", {"agentType": "worker", "allowedResources": "tasks"})
    assert caught.value.field == "spec.allowedResources"


def test_a_non_string_resource_names_its_index() -> None:
    with pytest.raises(ValidationError) as caught:
        policy_from_spec(NS, "p", {"agentType": "worker", "namespaces": ["ok", 3]})
    assert caught.value.field == "spec.namespaces[1]"
    assert "3" in caught.value.message


# --- what each mesh call needs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "action", "resource"),
    [
        (MeshCall.SUBMIT_TASK, "execute", "tasks"),
        (MeshCall.READ_TASK, "read", "tasks"),
        (MeshCall.READ_RESULT, "read", "results"),
        (MeshCall.DISCOVER_AGENTS, "read", "agents"),
        (MeshCall.BROADCAST_EVENT, "write", "events"),
        (MeshCall.MESSAGE_AGENT, "execute", "agents"),
        (MeshCall.MANAGE_POLICIES, "admin", "acl"),
        (MeshCall.READ_POLICIES, "read", "acl"),
        (MeshCall.READ_AUDIT, "read", "audit"),
        (MeshCall.REVOKE_TOKENS, "admin", "tokens"),
    ],
)
def test_mesh_call_needs_the_action_and_resource_of_the_design(
    call: MeshCall, action: str, resource: str
) -> None:
    assert call.action == Action(action)
    assert call.resource == resource


def test_mesh_calls_never_need_the_wildcard_action() -> None:
    assert all(call.action is not Action.ALL for call in MeshCall)


def test_governor_may_manage_policies_and_worker_may_not() -> None:
    index = PolicyIndex()
    call = MeshCall.MANAGE_POLICIES
    assert index.decide("governor", NS, call.action, call.resource).allowed
    assert not index.decide("worker", NS, call.action, call.resource).allowed


def test_a_policy_for_the_operators_reserved_type_is_refused_naming_agent_type() -> None:
    with pytest.raises(ValidationError) as error:
        policy_from_spec("ns", "grab", {"agentType": "mesh-operator", "allowedActions": ["*"]})
    assert error.value.field == "spec.agentType"
    assert "reserved" in error.value.message
