"""The ACL engine: who may do what to which resource, in which namespace (DESIGN §2).

Pure and in memory, because it answers on every mesh call: the controller feeds it
ACLPolicy objects from a watch, and decisions are dictionary lookups, cached until the
next policy change.
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
    )


def policy_to_spec(policy: Policy) -> dict[str, Any]:
    """The camelCase spec `policy_from_spec` reads back into the same Policy."""
    return {
        "agentType": policy.agent_type,
        "allowedActions": sorted(a.value for a in policy.allowed_actions),
        "allowedResources": sorted(policy.allowed_resources),
        "deniedActions": sorted(a.value for a in policy.denied_actions),
        "deniedResources": sorted(policy.denied_resources),
        "namespaces": sorted(policy.namespaces),
    }


def _items(spec: Mapping[str, Any], key: str) -> list[Any]:
    value = spec.get(key)
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValidationError(
            f"spec.{key} must be a list (got {value!r})",
            field=f"spec.{key}",
        )
    return list(value)


def _actions(spec: Mapping[str, Any], key: str) -> frozenset[Action]:
    actions: set[Action] = set()
    for i, item in enumerate(_items(spec, key)):
        action = _BY_VALUE.get(item) if isinstance(item, str) else None
        if action is None:
            raise ValidationError(
                f"unknown action {item!r}: must be one of {_ACTIONS_TEXT}",
                field=f"spec.{key}[{i}]",
            )
        actions.add(action)
    return frozenset(actions)


def _names(spec: Mapping[str, Any], key: str) -> frozenset[str]:
    names: set[str] = set()
    for i, item in enumerate(_items(spec, key)):
        if not isinstance(item, str) or not item:
            raise ValidationError(
                f"spec.{key}[{i}] must be a non-empty name or '{WILDCARD}' (got {item!r})",
                field=f"spec.{key}[{i}]",
            )
        names.add(item)
    return frozenset(names)


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
        self._cache: dict[tuple[str, str, Action, str, str], Decision] = {}

    def upsert(self, namespace: str, name: str, created_at: dt.datetime, policy: Policy) -> None:
        """Add or replace the policy held by ACLPolicy `namespace/name`."""
        self.remove(namespace, name)
        key = (namespace, policy.agent_type)
        self._entries[(namespace, name)] = _Entry(created_at, name, policy)
        self._names_by_type.setdefault(key, set()).add(name)
        self._elect(key)
        self._cache.clear()

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

    def _elect(self, key: tuple[str, str]) -> None:
        namespace = key[0]
        names = self._names_by_type.get(key)
        if not names:
            self._winner.pop(key, None)
            return
        self._winner[key] = min(
            (self._entries[(namespace, n)] for n in names), key=lambda e: e.seniority
        )

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
        return sorted(
            ((e.name, e.policy) for (ns, _), e in self._winner.items() if ns == namespace),
            key=lambda pair: pair[1].agent_type,
        )

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
        in `target_namespace` (default: its own)? `action` must be concrete, not '*'."""
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
        policy = self.policy_for(subject_namespace, subject_type)
        if policy is None:
            return Decision(
                False,
                f"custom type {subject_type} has no ACLPolicy in namespace "
                f"{subject_namespace}: denied",
                "none",
            )
        return evaluate(policy, subject_namespace, action, resource, target_namespace)


def evaluate(
    policy: Policy,
    subject_namespace: str,
    action: Action,
    resource: str,
    target_namespace: str,
) -> Decision:
    """Apply one policy: namespace reach first, then denies, then allows."""
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

    denied_actions, denied_resources = policy.denied_actions, policy.denied_resources
    if denied_actions or denied_resources:
        action_hit = _hit(action, denied_actions) if denied_actions else None
        resource_hit = _hit(resource, denied_resources) if denied_resources else None
        if denied_actions and denied_resources:
            rule = (
                f"deniedActions {action_hit} on deniedResources {resource_hit}"
                if action_hit and resource_hit
                else None
            )
        elif denied_actions:
            rule = f"deniedActions {action_hit}" if action_hit else None
        else:
            rule = f"deniedResources {resource_hit}" if resource_hit else None
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


def _hit(value: str, listed: frozenset[Action] | frozenset[str]) -> str | None:
    """The entry of `listed` that covers `value` (itself, or the wildcard), if any."""
    if value in listed:
        return str(value)
    if WILDCARD in listed:
        return WILDCARD
    return None
