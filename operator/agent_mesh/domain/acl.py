"""The ACL engine: who may do what to which resource, in which namespace (DESIGN §2).

Pure and in memory, because it answers on every mesh call: the controller feeds it
ACLPolicy objects from a watch, and decisions are dictionary lookups, cached until the
next policy change.

Reach across namespaces takes two consents: the caller's own policy must reach the target
namespace (`spec.namespaces`), and a policy in force in the target namespace must admit
the caller's namespace, type, action and resource (`spec.admit`). Neither side alone is
enough, so whoever writes policies in one namespace cannot open another to its agents.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Any, Final

from agent_mesh.domain.errors import ValidationError

WILDCARD: Final = "*"
"""In a list of actions, resources or namespaces: all of them."""

CACHE_MAX_ENTRIES: Final = 65_536
"""The decision cache is cleared when it grows past this (bounds memory under churn)."""


class Action(StrEnum):
    """What an agent does to a resource; '*' stands for every action."""

    READ = "read"
    WRITE = "write"
    EXECUTE = "execute"
    ADMIN = "admin"
    ALL = WILDCARD


CONCRETE_ACTIONS: Final = tuple(a for a in Action if a is not Action.ALL)
"""The actions a mesh call can need (a call never needs '*')."""


class BuiltinAgentType(StrEnum):
    """Agent types with default ACLs (DESIGN §2); any other DNS label is a custom type."""

    ORCHESTRATOR = "orchestrator"
    WORKER = "worker"
    MONITOR = "monitor"
    INTEGRATOR = "integrator"
    GOVERNOR = "governor"
    CRITIC = "critic"


OPERATOR_AGENT_TYPE: Final = "mesh-operator"
"""The agentType of the operator's own tokens (task dispatch, health events). Reserved: no
MeshAgent or ACLPolicy may use it, so nobody can claim or reshape the operator's rights."""
OPERATOR_SUBJECT: Final = "agent-mesh-operator"


class MeshCall(Enum):
    """The action and resource each mesh call needs (DESIGN §2 'What each mesh call needs')."""

    _value_: tuple[Action, str]

    SUBMIT_TASK = (Action.EXECUTE, "tasks")
    READ_TASK = (Action.READ, "tasks")
    READ_RESULT = (Action.READ, "results")
    DISCOVER_AGENTS = (Action.READ, "agents")
    BROADCAST_EVENT = (Action.WRITE, "events")
    MESSAGE_AGENT = (Action.EXECUTE, "agents")
    MANAGE_POLICIES = (Action.ADMIN, "acl")
    READ_POLICIES = (Action.READ, "acl")
    READ_AUDIT = (Action.READ, "audit")
    REVOKE_TOKENS = (Action.ADMIN, "tokens")

    @property
    def action(self) -> Action:
        return self._value_[0]

    @property
    def resource(self) -> str:
        return self._value_[1]


@dataclass(frozen=True, slots=True)
class AdmitRule:
    """Consent a namespace gives: agents of `agent_types` from `namespace` may do `actions`
    on `resources` here, when their own policy reaches here too."""

    namespace: str
    """The namespace admitted: one name, never '*' (consent names whom it trusts)."""
    agent_types: frozenset[str]
    actions: frozenset[Action]
    resources: frozenset[str]

    def admits(self, namespace: str, agent_type: str, action: Action, resource: str) -> bool:
        return (
            namespace == self.namespace
            and _hit(agent_type, self.agent_types) is not None
            and _hit(action, self.actions) is not None
            and _hit(resource, self.resources) is not None
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """The permissions of one agent type in one namespace. Deny beats allow."""

    agent_type: str
    namespace: str | None
    """None for a built-in default, which applies in every namespace without a policy."""
    allowed_actions: frozenset[Action]
    allowed_resources: frozenset[str]
    denied_actions: frozenset[Action]
    denied_resources: frozenset[str]
    namespaces: frozenset[str]
    """Other namespaces the agents may reach; their own is always reachable."""
    source: str
    """Where the rules come from, for audit: `default:worker`, `policy team-a/acl`."""
    admit: tuple[AdmitRule, ...] = ()
    """Agents of other namespaces this namespace admits (in any policy in force here)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one access question, with a sentence saying which rule decided."""

    allowed: bool
    reason: str
    source: str


@dataclass(frozen=True, slots=True)
class Standing:
    """Whether an ACLPolicy is in force, or which older policy for its type shadows it."""

    in_force: bool
    conflicts_with: str | None


def _default(
    agent_type: BuiltinAgentType,
    allowed_actions: Iterable[Action],
    allowed_resources: Iterable[str],
    denied_actions: Iterable[Action] = (),
) -> Policy:
    return Policy(
        agent_type=agent_type.value,
        namespace=None,
        allowed_actions=frozenset(allowed_actions),
        allowed_resources=frozenset(allowed_resources),
        denied_actions=frozenset(denied_actions),
        denied_resources=frozenset(),
        namespaces=frozenset(),
        source=f"default:{agent_type.value}",
    )


_R, _W, _X, _A = Action.READ, Action.WRITE, Action.EXECUTE, Action.ADMIN

DEFAULT_POLICIES: Final[Mapping[str, Policy]] = MappingProxyType(
    {
        p.agent_type: p
        for p in (
            _default(BuiltinAgentType.ORCHESTRATOR, [Action.ALL], [WILDCARD]),
            _default(BuiltinAgentType.WORKER, [_R, _X], ["tasks", "results"], [_A]),
            _default(BuiltinAgentType.MONITOR, [_R], [WILDCARD], [_W, _X, _A]),
            _default(BuiltinAgentType.INTEGRATOR, [_R, _W], ["integrations", "data"], [_A]),
            _default(BuiltinAgentType.GOVERNOR, [_R, _W, _A], ["policies", "acl", "audit"]),
            _default(BuiltinAgentType.CRITIC, [_R, _W], ["reviews", "feedback", "metrics"], [_A]),
        )
    }
)
"""The ACL of each built-in type in a namespace that has no ACLPolicy for it."""

OPERATOR_POLICY: Final = Policy(
    agent_type=OPERATOR_AGENT_TYPE,
    namespace=None,
    allowed_actions=frozenset({_R, _W, _X}),
    allowed_resources=frozenset({"tasks", "results", "events", "agents"}),
    denied_actions=frozenset({_A}),
    denied_resources=frozenset(),
    namespaces=frozenset({WILDCARD}),
    source="operator",
)
"""What the operator's own tokens may do on agents: dispatch tasks, send events. Fixed:
no ACLPolicy can name the reserved type."""

_ACTIONS_TEXT: Final = ", ".join(a.value for a in Action)
_BY_VALUE: Final[Mapping[str, Action]] = MappingProxyType({a.value: a for a in Action})


def policy_from_spec(namespace: str, name: str, spec: Mapping[str, Any]) -> Policy:
    """A Policy from an ACLPolicy's camelCase spec; ValidationError names the bad field."""
    agent_type = spec.get("agentType")
    if not isinstance(agent_type, str) or not agent_type:
        raise ValidationError(
            f"spec.agentType is required: the agent type the policy governs (got {agent_type!r})",
            field="spec.agentType",
        )
    if agent_type == OPERATOR_AGENT_TYPE:
        raise ValidationError(
            f"spec.agentType {OPERATOR_AGENT_TYPE} is reserved for the operator's own identity",
            field="spec.agentType",
        )
    return Policy(
        agent_type=agent_type,
        namespace=namespace,
        allowed_actions=_actions(spec, "allowedActions"),
        allowed_resources=_names(spec, "allowedResources"),
        denied_actions=_actions(spec, "deniedActions"),
        denied_resources=_names(spec, "deniedResources"),
        namespaces=_names(spec, "namespaces"),
        source=f"policy {namespace}/{name}",
        admit=_admit_rules(namespace, spec),
    )


def policy_to_spec(policy: Policy) -> dict[str, Any]:
    """The camelCase spec `policy_from_spec` reads back into the same Policy."""
    spec: dict[str, Any] = {
        "agentType": policy.agent_type,
        "allowedActions": sorted(a.value for a in policy.allowed_actions),
        "allowedResources": sorted(policy.allowed_resources),
        "deniedActions": sorted(a.value for a in policy.denied_actions),
        "deniedResources": sorted(policy.denied_resources),
        "namespaces": sorted(policy.namespaces),
    }
    if policy.admit:
        spec["admit"] = [
            {
                "namespace": rule.namespace,
                "agentTypes": sorted(rule.agent_types),
                "actions": sorted(a.value for a in rule.actions),
                "resources": sorted(rule.resources),
            }
            for rule in policy.admit
        ]
    return spec


def _items(spec: Mapping[str, Any], key: str, where: str = "spec") -> list[Any]:
    value = spec.get(key)
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError(
            f"{where}.{key} must be a list (got {value!r})",
            field=f"{where}.{key}",
        )
    return list(value)


def _actions(spec: Mapping[str, Any], key: str, where: str = "spec") -> frozenset[Action]:
    actions: set[Action] = set()
    for i, item in enumerate(_items(spec, key, where)):
        action = _BY_VALUE.get(item) if isinstance(item, str) else None
        if action is None:
            raise ValidationError(
                f"unknown action {item!r}: must be one of {_ACTIONS_TEXT}",
                field=f"{where}.{key}[{i}]",
            )
        actions.add(action)
    return frozenset(actions)


def _names(spec: Mapping[str, Any], key: str, where: str = "spec") -> frozenset[str]:
    names: set[str] = set()
    for i, item in enumerate(_items(spec, key, where)):
        if not isinstance(item, str) or not item:
            raise ValidationError(
                f"{where}.{key}[{i}] must be a non-empty name or '{WILDCARD}' (got {item!r})",
                field=f"{where}.{key}[{i}]",
            )
        names.add(item)
    return frozenset(names)


def _admit_rules(namespace: str, spec: Mapping[str, Any]) -> tuple[AdmitRule, ...]:
    rules: list[AdmitRule] = []
    for i, item in enumerate(_items(spec, "admit")):
        where = f"spec.admit[{i}]"
        if not isinstance(item, Mapping):
            raise ValidationError(
                f"{where} must be an object with namespace, agentTypes, actions and resources "
                f"(got {item!r})",
                field=where,
            )
        admitted = item.get("namespace")
        if not isinstance(admitted, str) or not admitted:
            raise ValidationError(
                f"{where}.namespace is required: the one namespace whose agents are admitted "
                f"(got {admitted!r})",
                field=f"{where}.namespace",
            )
        if admitted == WILDCARD:
            raise ValidationError(
                f"{where}.namespace may not be '{WILDCARD}': consent names each namespace it "
                "admits, so nobody can reach this one by creating or renaming a namespace",
                field=f"{where}.namespace",
            )
        if admitted == namespace:
            raise ValidationError(
                f"{where}.namespace is this policy's own namespace {namespace}, which needs "
                "no consent: admit names other namespaces",
                field=f"{where}.namespace",
            )
        agent_types = _names(item, "agentTypes", where)
        if OPERATOR_AGENT_TYPE in agent_types:
            raise ValidationError(
                f"{where}.agentTypes may not name {OPERATOR_AGENT_TYPE}: the operator's own "
                "identity is not admitted by policies",
                field=f"{where}.agentTypes",
            )
        rule = AdmitRule(
            namespace=admitted,
            agent_types=agent_types,
            actions=_actions(item, "actions", where),
            resources=_names(item, "resources", where),
        )
        for key, values in (
            ("agentTypes", rule.agent_types),
            ("actions", rule.actions),
            ("resources", rule.resources),
        ):
            if not values:
                raise ValidationError(
                    f"{where}.{key} must list at least one entry ('{WILDCARD}' for all): "
                    "consent is explicit",
                    field=f"{where}.{key}",
                )
        rules.append(rule)
    return tuple(rules)


@dataclass(frozen=True, slots=True)
class _Entry:
    created_at: dt.datetime
    name: str
    policy: Policy

    @property
    def seniority(self) -> tuple[dt.datetime, str]:
        return (self.created_at, self.name)


class PolicyIndex:
    """The ACLPolicy objects the operator has seen, and the decisions they imply.

    At most one policy is in force per (namespace, agentType): the oldest by creation time
    (ties broken by name). The others conflict with it and take over, oldest first, when it
    goes away.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._names_by_type: dict[tuple[str, str], set[str]] = {}
        self._winner: dict[tuple[str, str], _Entry] = {}
        self._types_in: dict[str, set[str]] = {}  # namespace → types with a policy in force
        self._cache: dict[tuple[str, str, Action, str, str], Decision] = {}
        self._admits: dict[str, dict[str, frozenset[str]]] = {}  # cached like decisions

    def upsert(self, namespace: str, name: str, created_at: dt.datetime, policy: Policy) -> None:
        """Add or replace the policy held by ACLPolicy `namespace/name`."""
        self.remove(namespace, name)
        key = (namespace, policy.agent_type)
        self._entries[(namespace, name)] = _Entry(created_at, name, policy)
        self._names_by_type.setdefault(key, set()).add(name)
        self._elect(key)
        self._cache.clear()
        self._admits.clear()

    def remove(self, namespace: str, name: str) -> None:
        """Forget ACLPolicy `namespace/name`; the next oldest for its type takes over."""
        entry = self._entries.pop((namespace, name), None)
        if entry is None:
            return
        key = (namespace, entry.policy.agent_type)
        names = self._names_by_type[key]
        names.discard(name)
        if not names:
            del self._names_by_type[key]
        self._elect(key)
        self._cache.clear()
        self._admits.clear()

    def _elect(self, key: tuple[str, str]) -> None:
        namespace = key[0]
        names = self._names_by_type.get(key)
        if not names:
            self._winner.pop(key, None)
            types = self._types_in.get(namespace)
            if types is not None:
                types.discard(key[1])
                if not types:
                    del self._types_in[namespace]
            return
        self._winner[key] = min(
            (self._entries[(namespace, n)] for n in names), key=lambda e: e.seniority
        )
        self._types_in.setdefault(namespace, set()).add(key[1])

    def standing(self, namespace: str, name: str) -> Standing:
        """In force, or shadowed by the named older policy; not in force if unknown."""
        entry = self._entries.get((namespace, name))
        if entry is None:
            return Standing(in_force=False, conflicts_with=None)
        winner = self._winner[(namespace, entry.policy.agent_type)]
        if winner.name == name:
            return Standing(in_force=True, conflicts_with=None)
        return Standing(in_force=False, conflicts_with=winner.name)

    def in_force(self, namespace: str) -> list[tuple[str, Policy]]:
        """(ACLPolicy name, policy) of each policy in force in `namespace`, by type."""
        return [
            (entry.name, entry.policy)
            for entry in (
                self._winner[(namespace, t)] for t in sorted(self._types_in.get(namespace, ()))
            )
        ]

    def affected(self, namespace: str, agent_type: str) -> list[str]:
        """Names of every policy for this type in this namespace, oldest first."""
        names = self._names_by_type.get((namespace, agent_type), ())
        entries = sorted((self._entries[(namespace, n)] for n in names), key=lambda e: e.seniority)
        return [e.name for e in entries]

    def policy_for(self, namespace: str, agent_type: str) -> Policy | None:
        """The policy in force, else the built-in default, else None (a custom type)."""
        if agent_type == OPERATOR_AGENT_TYPE:
            return OPERATOR_POLICY
        winner = self._winner.get((namespace, agent_type))
        if winner is not None:
            return winner.policy
        return DEFAULT_POLICIES.get(agent_type)

    def decide(
        self,
        subject_type: str,
        subject_namespace: str,
        action: Action,
        resource: str,
        target_namespace: str | None = None,
    ) -> Decision:
        """May an agent of `subject_type` in `subject_namespace` do `action` on `resource`
        in `target_namespace` (default: its own)? In another namespace, both the caller's
        policy and that namespace's consent must allow it. `action` must be concrete."""
        if target_namespace is None:
            target_namespace = subject_namespace
        key = (subject_type, subject_namespace, action, resource, target_namespace)
        decision = self._cache.get(key)
        if decision is None:
            decision = self._evaluate(*key)
            if len(self._cache) >= CACHE_MAX_ENTRIES:
                self._cache.clear()
            self._cache[key] = decision
        return decision

    def _evaluate(
        self,
        subject_type: str,
        subject_namespace: str,
        action: Action,
        resource: str,
        target_namespace: str,
    ) -> Decision:
        if action == Action.ALL:
            raise ValueError(
                f"decide needs a concrete action ({', '.join(CONCRETE_ACTIONS)}), not '*'"
            )
        consent: Decision | None = None
        if target_namespace != subject_namespace and subject_type != OPERATOR_AGENT_TYPE:
            # the operator's identity is bound to its recipient's namespace instead
            consent = self._consent(
                subject_type, subject_namespace, action, resource, target_namespace
            )
            if not consent.allowed:
                return consent
        policy = self.policy_for(subject_namespace, subject_type)
        if policy is None:
            return Decision(
                False,
                f"custom type {subject_type} has no ACLPolicy in namespace "
                f"{subject_namespace}: denied",
                "none",
            )
        own = evaluate(policy, subject_namespace, action, resource, target_namespace)
        if consent is None or not own.allowed:
            return own
        return Decision(True, f"{own.reason}; {consent.reason}", f"{own.source} + {consent.source}")

    def _consent(
        self,
        subject_type: str,
        subject_namespace: str,
        action: Action,
        resource: str,
        target_namespace: str,
    ) -> Decision:
        """The target namespace's side of a cross-namespace call, asked first: its rules
        for the caller's type deny (they bind visitors of that type too), then an admit rule
        in force there must name the caller's namespace, type, action and resource."""
        who = f"{subject_type} in {subject_namespace}"
        what = f"{action} {resource} in {target_namespace}"
        host = self.policy_for(target_namespace, subject_type)
        if host is not None:
            rule = _denied_rule(host, action, resource)
            if rule is not None:
                return Decision(
                    False,
                    f"{who} may not {what}: namespace {target_namespace} refuses it, denied by "
                    f"{host.source} ({rule}), which binds {subject_type} agents from every "
                    "namespace",
                    host.source,
                )
        for _, policy in self.in_force(target_namespace):
            for i, admit in enumerate(policy.admit):
                if admit.admits(subject_namespace, subject_type, action, resource):
                    return Decision(
                        True, f"admitted by {policy.source} (admit[{i}])", policy.source
                    )
        return Decision(
            False,
            f"{who} may not {what}: namespace {target_namespace} has not consented (no "
            f"ACLPolicy in force there admits {subject_type} agents from {subject_namespace} "
            f"to {action} {resource} in spec.admit)",
            f"consent {target_namespace}",
        )

    def _admitted(self, namespace: str) -> dict[str, frozenset[str]]:
        """Admitted namespace → agent types admitted from it, by the policies in force in
        `namespace` (cached until the next policy change: agents ask on every sync)."""
        admitted = self._admits.get(namespace)
        if admitted is None:
            types: dict[str, set[str]] = {}
            for _, policy in self.in_force(namespace):
                for rule in policy.admit:
                    types.setdefault(rule.namespace, set()).update(rule.agent_types)
            admitted = {ns: frozenset(t) for ns, t in types.items()}
            if len(self._admits) >= CACHE_MAX_ENTRIES:
                self._admits.clear()
            self._admits[namespace] = admitted
        return admitted

    def admitted_namespaces(self, namespace: str) -> frozenset[str]:
        """The namespaces the policies in force in `namespace` admit: those whose tokens
        can reach its agents."""
        return frozenset(self._admitted(namespace))

    def admitted_policies(self, namespace: str) -> list[tuple[str, str, Policy]]:
        """(namespace, ACLPolicy name, policy) of the policies in force for each type
        `namespace` admits, in the namespace it admits it from: the callers' side of every
        cross-namespace call it may allow, for agents that decide on their own."""
        out = []
        for ns, types in sorted(self._admitted(namespace).items()):
            for name, policy in self.in_force(ns):
                if policy.agent_type in types or WILDCARD in types:
                    out.append((ns, name, policy))
        return out


def evaluate(
    policy: Policy,
    subject_namespace: str,
    action: Action,
    resource: str,
    target_namespace: str,
) -> Decision:
    """Apply one policy, the caller's own side of a decision: namespace reach first, then
    denies, then allows. A call into another namespace also needs that namespace's consent
    (PolicyIndex.decide)."""
    who = policy.agent_type
    what = f"{action} {resource}"
    source = policy.source
    if target_namespace != subject_namespace:
        reach = policy.namespaces
        if target_namespace not in reach and WILDCARD not in reach:
            listed = ", ".join(sorted(reach)) or "own only"
            return Decision(
                False,
                f"{who} in {subject_namespace} may not reach namespace {target_namespace}: "
                f"denied by {source} (namespaces {listed})",
                source,
            )
        who = f"{who} in {subject_namespace}"
        what = f"{what} in {target_namespace}"

    rule = _denied_rule(policy, action, resource)
    if rule is not None:
        return Decision(False, f"{who} may not {what}: denied by {source} ({rule})", source)

    allowed_action = _hit(action, policy.allowed_actions)
    if allowed_action is None:
        return Decision(
            False,
            f"{who} may not {what}: not allowed by {source} ({action} is not in allowedActions)",
            source,
        )
    allowed_resource = _hit(resource, policy.allowed_resources)
    if allowed_resource is None:
        return Decision(
            False,
            f"{who} may not {what}: not allowed by {source} "
            f"({resource} is not in allowedResources)",
            source,
        )
    return Decision(
        True,
        f"{who} may {what}: allowed by {source} "
        f"(allowedActions {allowed_action}, allowedResources {allowed_resource})",
        source,
    )


def _denied_rule(policy: Policy, action: Action, resource: str) -> str | None:
    """The deny rule of `policy` that covers (action, resource), as reason text, if any."""
    denied_actions, denied_resources = policy.denied_actions, policy.denied_resources
    if not (denied_actions or denied_resources):
        return None
    action_hit = _hit(action, denied_actions) if denied_actions else None
    resource_hit = _hit(resource, denied_resources) if denied_resources else None
    if denied_actions and denied_resources:
        if action_hit and resource_hit:
            return f"deniedActions {action_hit} on deniedResources {resource_hit}"
        return None
    if denied_actions:
        return f"deniedActions {action_hit}" if action_hit else None
    return f"deniedResources {resource_hit}" if resource_hit else None


def _hit(value: str, listed: frozenset[Action] | frozenset[str]) -> str | None:
    """The entry of `listed` that covers `value` (itself, or the wildcard), if any."""
    if value in listed:
        return str(value)
    if WILDCARD in listed:
        return WILDCARD
    return None
