"""Routing: which agent gets a task, by which strategy, and why none when none (DESIGN §4).

A decision must not scan a namespace's agents. The router keeps, per namespace, one pool
per demand shape in use (required capabilities, agentType, labels): the agents that fit
it, and among them the *available* ones (healthy, with a free slot) both sorted by
agentId (round-robin, random, plug-ins) and bucketed by (capability count, active tasks)
(least-loaded, capability-match). A decision takes the first suitable agent of its
shape's pool, so its cost does not grow with the fleet. A pool is built on the first
task of its shape (one set intersection) and then kept up to date incrementally by
health, load and membership changes; the least recently used pools are dropped past a
bound. Why nothing is available is worked out only when a decision comes back empty,
and remembered while no agent or health change can alter it.

Routing and load accounting are separate: `route` chooses, and the caller `assign`s once
the dispatch has started (`route_and_assign` does both).
"""

from __future__ import annotations

import bisect
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import chain, islice
from typing import Final, Protocol

from agent_mesh.domain.agents import AgentRecord, discard_member
from agent_mesh.domain.health import HealthStatus
from agent_mesh.domain.task_reasons import MeshTaskReason

logger = logging.getLogger("agent_mesh.routing")

ENTRY_POINT_GROUP: Final = "agent_mesh.strategies"
"""Entry-point group of plug-in strategies; the entry point's name is the strategy's
(found by runtime.plugins.load_strategies, which the operator hands the Router)."""


class BuiltinStrategy(StrEnum):
    """The strategies every operator has (DESIGN §4)."""

    CAPABILITY_MATCH = "capability-match"
    LEAST_LOADED = "least-loaded"
    RANDOM = "random"
    ROUND_ROBIN = "round-robin"


DEFAULT_STRATEGY: Final = BuiltinStrategy.LEAST_LOADED


@dataclass(frozen=True, slots=True)
class TaskDemand:
    """What routing needs to know of a task: where, what it requires, how to choose."""

    namespace: str
    task_type: str
    required_capabilities: frozenset[str] = frozenset()
    agent_type: str | None = None
    """spec.agentSelector.agentType."""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    """spec.agentSelector.labels: all must be among the agent's metadata.labels."""
    agent_ref: str | None = None
    """spec.agentSelector.agentRef: the pinned MeshAgent's metadata.name."""
    strategy: str | None = None
    """spec.strategy; None means the router's default."""
    exclude: frozenset[str] = frozenset()
    """agentIds already tried: any other candidate is preferred, these are the fallback."""

    def __post_init__(self) -> None:
        # tolerate lists and tuples from callers; the hot path needs frozensets
        for name in ("required_capabilities", "exclude"):
            value = getattr(self, name)
            if not isinstance(value, frozenset):
                object.__setattr__(self, name, frozenset(value))


@dataclass(frozen=True, slots=True)
class Candidate:
    """An agent a task may go to, as a plug-in strategy sees it."""

    agent_id: str
    name: str
    agent_type: str
    capabilities: frozenset[str]
    labels: Mapping[str, str]
    active_tasks: int
    max_concurrent_tasks: int
    record: AgentRecord = field(compare=False, repr=False)


class Strategy(Protocol):
    """A plug-in strategy: choose one of `candidates` (never empty, ordered by agentId;
    already-tried agents only when no other is left), or None to leave the task waiting."""

    def select(
        self, candidates: Sequence[Candidate], task: TaskDemand
    ) -> str | Candidate | None: ...


StrategyLoader = Callable[[], tuple[dict[str, Strategy], dict[str, str]]]
"""Finds the plug-in strategies: those that loaded by name, and why each one that failed
to load did. Built-in names are not to be taken over."""


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """The agent chosen for a task, or the reason there is none (for its condition)."""

    agent_id: str | None
    strategy: str
    reason: MeshTaskReason | None = None
    message: str = ""
    missing_capabilities: tuple[str, ...] = ()
    """Required capabilities no agent in the namespace holds (reason NoCapableAgent)."""
    fallback: bool = False
    """The agent was already tried (in `exclude`), for want of any other candidate."""

    @property
    def routed(self) -> bool:
        return self.agent_id is not None


class _Agent:
    """The router's mutable state of one agent."""

    __slots__ = (
        "active",
        "agent_id",
        "agent_type",
        "available",
        "caps",
        "health",
        "label_items",
        "labels",
        "limit",
        "name",
        "ncaps",
        "pools",
        "record",
    )

    def __init__(self, record: AgentRecord, health: HealthStatus, active: int) -> None:
        self.health = health
        self.active = max(0, active)
        self.pools: list[_Pool] = []
        self.refresh(record)

    def refresh(self, record: AgentRecord) -> None:
        self.record = record
        self.agent_id = record.agent_id
        self.name = record.name
        self.agent_type = record.agent_type
        self.caps = frozenset(record.capabilities)
        self.ncaps = len(self.caps)
        self.labels = record.labels
        self.label_items = frozenset(record.labels.items())
        self.limit = record.max_concurrent_tasks
        self.available = self.health is HealthStatus.HEALTHY and self.active < self.limit

    def same_shape(self, record: AgentRecord) -> bool:
        """Whether `record` leaves this agent in the same pools with the same limit."""
        return (
            self.name == record.name
            and self.agent_type == record.agent_type
            and self.caps == frozenset(record.capabilities)
            and self.limit == record.max_concurrent_tasks
            and self.labels == record.labels
        )

    def view(self) -> Candidate:
        return Candidate(
            self.agent_id,
            self.name,
            self.agent_type,
            self.caps,
            self.labels,
            self.active,
            self.limit,
            self.record,
        )


_Shape = tuple[frozenset[str], str | None, frozenset[tuple[str, str]]]
"""What a task requires of an agent: capabilities, agentType, labels."""

_NO_LABELS: Final[frozenset[tuple[str, str]]] = frozenset()


def _shape(task: TaskDemand) -> _Shape:
    labels = frozenset(task.labels.items()) if task.labels else _NO_LABELS
    return task.required_capabilities, task.agent_type, labels


_Key = tuple[int, int]
"""A load bucket: (capability count, active tasks)."""


class _Pool:
    """The agents of a namespace that fit one demand shape."""

    __slots__ = (
        "_fit_order",
        "_load_order",
        "agent_type",
        "buckets",
        "capabilities",
        "cursor",
        "free",
        "free_ids",
        "labels",
        "members",
    )

    def __init__(self, shape: _Shape) -> None:
        self.capabilities, self.agent_type, self.labels = shape
        self.members: set[str] = set()
        self.free_ids: list[str] = []
        """Available members' agentIds, sorted; `free` holds the agents in the same order."""
        self.free: list[_Agent] = []
        self.buckets: dict[_Key, dict[str, _Agent]] = {}
        """Available members by (capability count, load); dicts keep arrival order, which
        breaks ties without depending on string hashing."""
        self.cursor: str | None = None
        """Round-robin: the agentId chosen last."""
        # the bucket keys, sorted both ways, kept sorted as buckets come and go
        self._fit_order: list[_Key] = []
        self._load_order: list[tuple[int, int]] = []

    def accepts(self, agent: _Agent) -> bool:
        return (
            agent.caps >= self.capabilities
            and (self.agent_type is None or agent.agent_type == self.agent_type)
            and agent.label_items >= self.labels
        )

    def add(self, agent: _Agent) -> None:
        self.members.add(agent.agent_id)
        if agent.available:
            self.enter(agent)

    def fill(self, agents: Iterable[_Agent]) -> None:
        """Bulk `add` into an empty pool, of agents that fit, in agentId order (and enter
        the pool in each agent's list)."""
        members, free_ids, free, buckets = self.members, self.free_ids, self.free, self.buckets
        for agent in agents:
            members.add(agent.agent_id)
            agent.pools.append(self)
            if agent.available:
                free_ids.append(agent.agent_id)
                free.append(agent)
                key = (agent.ncaps, agent.active)
                bucket = buckets.get(key)
                if bucket is None:
                    bucket = buckets[key] = {}
                bucket[agent.agent_id] = agent
        self._fit_order = sorted(buckets)
        self._load_order = sorted((load, n) for n, load in buckets)

    def discard(self, agent: _Agent) -> None:
        self.members.discard(agent.agent_id)
        if agent.available:
            self.leave(agent, agent.active)

    def enter(self, agent: _Agent) -> None:
        """`agent` became available."""
        i = bisect.bisect_left(self.free_ids, agent.agent_id)
        self.free_ids.insert(i, agent.agent_id)
        self.free.insert(i, agent)
        self._bucket_add(agent)

    def leave(self, agent: _Agent, load: int) -> None:
        """`agent`, available at `load`, is no longer."""
        i = bisect.bisect_left(self.free_ids, agent.agent_id)
        del self.free_ids[i]
        del self.free[i]
        self._bucket_drop(agent, load)

    def move(self, agent: _Agent, load: int) -> None:
        """`agent` stays available, its load changed from `load`."""
        self._bucket_drop(agent, load)
        self._bucket_add(agent)

    def by_load(self) -> Iterator[_Agent]:
        """Available members, least loaded first (fewer capabilities first among equals)."""
        buckets = self.buckets
        return chain.from_iterable(buckets[n, load].values() for load, n in self._load_order)

    def by_fit(self) -> Iterator[_Agent]:
        """Available members, fewest capabilities first, then least loaded."""
        buckets = self.buckets
        return chain.from_iterable(buckets[key].values() for key in self._fit_order)

    def _bucket_add(self, agent: _Agent) -> None:
        key = (agent.ncaps, agent.active)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = {}
            bisect.insort(self._fit_order, key)
            bisect.insort(self._load_order, (agent.active, agent.ncaps))
        bucket[agent.agent_id] = agent

    def _bucket_drop(self, agent: _Agent, load: int) -> None:
        key = (agent.ncaps, load)
        bucket = self.buckets[key]
        del bucket[agent.agent_id]
        if not bucket:
            del self.buckets[key]
            del self._fit_order[bisect.bisect_left(self._fit_order, key)]
            del self._load_order[bisect.bisect_left(self._load_order, (load, agent.ncaps))]


POOLS_MAX: Final = 64
"""Demand shapes kept per namespace; the least recently used pool goes past this. Each
agent is in the pools of the shapes it fits, so this also bounds the work per change."""

_DemandKey = tuple[_Shape, str | None, str]
_DEAD_ENDS_MAX: Final = 4096
_EMPTY: Final[frozenset[str]] = frozenset()


class _Namespace:
    """One namespace's agents and pools; namespaces never see each other's agents."""

    __slots__ = ("agents", "by_name", "dead_ends", "holders", "of_type", "pools")

    def __init__(self) -> None:
        self.agents: dict[str, _Agent] = {}
        self.by_name: dict[str, _Agent] = {}
        self.holders: dict[str, set[str]] = {}
        """agentIds by capability, whatever their state (pools are built from these)."""
        self.of_type: dict[str, set[str]] = {}
        self.pools: dict[_Shape, _Pool] = {}
        """By shape, least recently used first."""
        self.dead_ends: dict[_DemandKey, RoutingDecision] = {}
        """Decisions that no load change can alter (no capable, matching or healthy
        agent), by demand; cleared whenever an agent comes, goes, changes or changes
        health. A task that can never fit then costs a lookup."""

    def add(self, agent: _Agent) -> None:
        self.dead_ends.clear()
        self.agents[agent.agent_id] = agent
        self.by_name[agent.name] = agent
        for capability in agent.caps:
            self.holders.setdefault(capability, set()).add(agent.agent_id)
        self.of_type.setdefault(agent.agent_type, set()).add(agent.agent_id)
        for pool in self.pools.values():
            if pool.accepts(agent):
                pool.add(agent)
                agent.pools.append(pool)

    def drop(self, agent: _Agent) -> None:
        self.dead_ends.clear()
        for pool in agent.pools:
            pool.discard(agent)
        agent.pools = []
        for capability in agent.caps:
            discard_member(self.holders, capability, agent.agent_id)
        discard_member(self.of_type, agent.agent_type, agent.agent_id)
        del self.agents[agent.agent_id]
        if self.by_name.get(agent.name) is agent:
            del self.by_name[agent.name]

    def pool(self, shape: _Shape) -> _Pool:
        """The pool of `shape`, built on first use."""
        pool = self.pools.pop(shape, None)
        if pool is None:
            if len(self.pools) >= POOLS_MAX:
                self._evict(next(iter(self.pools)))
            pool = self._build(shape)
        self.pools[shape] = pool
        return pool

    def capable(self, capabilities: frozenset[str]) -> Set[str]:
        """agentIds holding all of `capabilities` (set intersection, smallest first)."""
        if not capabilities:
            return self.agents.keys()
        sets = sorted((self.holders.get(c, _EMPTY) for c in capabilities), key=len)
        return sets[0].intersection(*sets[1:]) if len(sets) > 1 else sets[0]

    def _build(self, shape: _Shape) -> _Pool:
        pool = _Pool(shape)
        ids = self.capable(pool.capabilities)
        if pool.agent_type is not None:
            ids = ids & self.of_type.get(pool.agent_type, _EMPTY)
        agents = self.agents
        ordered = (agents[agent_id] for agent_id in sorted(ids))
        if pool.labels:
            ordered = (a for a in ordered if a.label_items >= pool.labels)
        pool.fill(ordered)
        return pool

    def _evict(self, shape: _Shape) -> None:
        pool = self.pools.pop(shape)
        for agent_id in pool.members:
            self.agents[agent_id].pools.remove(pool)


def _fits(agent: _Agent, task: TaskDemand) -> bool:
    """Capabilities and selector (availability aside)."""
    if not agent.caps >= task.required_capabilities:
        return False
    if task.agent_type is not None and agent.agent_type != task.agent_type:
        return False
    if task.agent_ref is not None and agent.name != task.agent_ref:
        return False
    return not task.labels or agent.label_items.issuperset(task.labels.items())


def _first(agents: Iterator[_Agent], exclude: frozenset[str]) -> _Agent | None:
    """The first agent not tried yet; else the first one."""
    if not exclude:
        return next(agents, None)
    fallback = None
    for agent in agents:
        if agent.agent_id not in exclude:
            return agent
        if fallback is None:
            fallback = agent
    return fallback


_Builtin = Callable[["Router", _Pool, TaskDemand], "_Agent | None"]

_RANDOM_TRIES: Final = 16
"""Draws among the available before `random` lists the untried ones instead."""


class Router:
    """Agents' availability, fed incrementally, and the routing decisions made from it."""

    def __init__(
        self,
        *,
        default_strategy: str = DEFAULT_STRATEGY,
        rng: random.Random | None = None,
        plugins: Mapping[str, Strategy] | None = None,
        load_plugins: StrategyLoader | None = None,
    ) -> None:
        """Plug-in strategies are `plugins`, else what `load_plugins` finds (called once,
        the first time a task names a strategy that is not built in; the operator passes
        runtime.plugins.load_strategies), else none."""
        self.default_strategy = default_strategy
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not security
        self._namespaces: dict[str, _Namespace] = {}
        self._plugins: dict[str, Strategy] | None = dict(plugins) if plugins is not None else None
        self._plugin_errors: dict[str, str] = {}
        self._load = load_plugins

    # -- the index ---------------------------------------------------------------------

    def upsert(self, record: AgentRecord) -> None:
        """Add an agent, or take a changed spec. Health and load of a new agent are seeded
        from its status; for a known one the router's own (fresher) values are kept."""
        ns = self._namespaces.get(record.namespace)
        if ns is None:
            ns = self._namespaces[record.namespace] = _Namespace()
        agent = ns.agents.get(record.agent_id)
        if agent is None:
            health = record.health or HealthStatus.PENDING
            ns.add(_Agent(record, health, record.active_tasks))
        elif agent.same_shape(record):
            agent.record = record
        else:
            ns.drop(agent)
            agent.refresh(record)
            ns.add(agent)

    def remove(self, namespace: str, agent_id: str) -> bool:
        """Forget an agent; False when it was not known."""
        ns = self._namespaces.get(namespace)
        agent = ns.agents.get(agent_id) if ns is not None else None
        if ns is None or agent is None:
            return False
        ns.drop(agent)
        if not ns.agents:
            del self._namespaces[namespace]
        return True

    def set_health(self, namespace: str, agent_id: str, health: HealthStatus) -> bool:
        """Only healthy agents get new work; False when the agent is not known."""
        ns = self._namespaces.get(namespace)
        agent = ns.agents.get(agent_id) if ns is not None else None
        if ns is None or agent is None:
            return False
        if agent.health is not health:
            ns.dead_ends.clear()
            self._update(agent, health, agent.active)
        return True

    def assign(self, namespace: str, agent_id: str) -> bool:
        """One more task running on the agent (call once its dispatch started)."""
        agent = self._agent(namespace, agent_id)
        if agent is None:
            return False
        self._update(agent, agent.health, agent.active + 1)
        return True

    def release(self, namespace: str, agent_id: str) -> bool:
        """One task fewer on the agent (finished, failed, timed out or failed over)."""
        agent = self._agent(namespace, agent_id)
        if agent is None:
            return False
        self._update(agent, agent.health, max(0, agent.active - 1))
        return True

    def observe_load(self, namespace: str, agent_id: str, active: int) -> bool:
        """The agent's own count of running tasks (heartbeat); it replaces the router's."""
        agent = self._agent(namespace, agent_id)
        if agent is None:
            return False
        self._update(agent, agent.health, max(0, active))
        return True

    def load(self, namespace: str, agent_id: str) -> int | None:
        """Active tasks the router counts for the agent; None when it is not known."""
        agent = self._agent(namespace, agent_id)
        return agent.active if agent is not None else None

    def __len__(self) -> int:
        return sum(len(ns.agents) for ns in self._namespaces.values())

    def __bool__(self) -> bool:
        """A router that knows no agent yet is still a router: `router or Router()` keeps
        it, with its default strategy and plug-ins (len() counts the agents)."""
        return True

    def _agent(self, namespace: str, agent_id: str) -> _Agent | None:
        ns = self._namespaces.get(namespace)
        return ns.agents.get(agent_id) if ns is not None else None

    @staticmethod
    def _update(agent: _Agent, health: HealthStatus, active: int) -> None:
        was, load = agent.available, agent.active
        agent.health, agent.active = health, active
        now = agent.available = health is HealthStatus.HEALTHY and active < agent.limit
        if was and now:
            if load != active:
                for pool in agent.pools:
                    pool.move(agent, load)
        elif was:
            for pool in agent.pools:
                pool.leave(agent, load)
        elif now:
            for pool in agent.pools:
                pool.enter(agent)

    # -- decisions ---------------------------------------------------------------------

    def route(self, task: TaskDemand) -> RoutingDecision:
        """Choose an agent for `task` (no load is assigned), or say why there is none."""
        name = str(task.strategy or self.default_strategy)
        builtin = _BUILTINS.get(name)
        plugin: Strategy | None = None
        if builtin is None:
            found = self._plugin(name)
            if isinstance(found, RoutingDecision):
                return found
            plugin = found
        ns = self._namespaces.get(task.namespace)
        if ns is None:
            return _why_none(None, task, name)
        if ns.dead_ends:
            known = ns.dead_ends.get((_shape(task), task.agent_ref, name))
            if known is not None:
                return known
        if task.agent_ref is not None:
            pinned = ns.by_name.get(task.agent_ref)
            if pinned is None or not pinned.available or not _fits(pinned, task):
                return _dead_end(ns, task, name)
            if plugin is None:
                return _chosen(pinned, task, name)
            return self._select(plugin, name, [pinned], task, ns)
        pool = ns.pool(_shape(task))
        if plugin is not None:
            return self._select(plugin, name, pool.free, task, ns)
        assert builtin is not None
        agent = builtin(self, pool, task)
        if agent is None:
            return _dead_end(ns, task, name, pool)
        return _chosen(agent, task, name)

    def route_and_assign(self, task: TaskDemand) -> RoutingDecision:
        """`route`, then `assign` the chosen agent: for callers whose dispatch cannot fail
        between the two (the in-memory fast path)."""
        decision = self.route(task)
        if decision.agent_id is not None:
            self.assign(task.namespace, decision.agent_id)
        return decision

    def candidates(self, task: TaskDemand) -> list[str]:
        """Every agentId the task may go to now (tried ones included), sorted: what the
        strategies choose from, for inspection and tests."""
        ns = self._namespaces.get(task.namespace)
        if ns is None:
            return []
        if task.agent_ref is not None:
            pinned = ns.by_name.get(task.agent_ref)
            fits = pinned is not None and pinned.available and _fits(pinned, task)
            return [pinned.agent_id] if pinned is not None and fits else []
        return list(ns.pool(_shape(task)).free_ids)

    def known_strategies(self) -> list[str]:
        """Built-in names, then the plug-ins that loaded."""
        return [*BuiltinStrategy, *sorted(self._load_plugins())]

    def _least_loaded(self, pool: _Pool, task: TaskDemand) -> _Agent | None:
        return _first(pool.by_load(), task.exclude)

    def _capability_match(self, pool: _Pool, task: TaskDemand) -> _Agent | None:
        return _first(pool.by_fit(), task.exclude)

    def _round_robin(self, pool: _Pool, task: TaskDemand) -> _Agent | None:
        """The next available agent after the previous pick, in agentId order, wrapping
        around; one turn per pool (namespace and demand shape)."""
        free = pool.free
        if not free:
            return None
        start = 0 if pool.cursor is None else bisect.bisect_right(pool.free_ids, pool.cursor)
        if task.exclude:
            agent = _first(chain(islice(free, start, None), islice(free, 0, start)), task.exclude)
        else:
            agent = free[start % len(free)]
        if agent is not None:
            pool.cursor = agent.agent_id
        return agent

    def _random(self, pool: _Pool, task: TaskDemand) -> _Agent | None:
        """Uniform over the untried available agents (else over the tried ones)."""
        free, rng, exclude = pool.free, self._rng, task.exclude
        if not free:
            return None
        if not exclude:
            return free[rng.randrange(len(free))]
        for _ in range(_RANDOM_TRIES):
            agent = free[rng.randrange(len(free))]
            if agent.agent_id not in exclude:
                return agent
        fresh = [a for a in free if a.agent_id not in exclude]
        return rng.choice(fresh or free)

    def _select(
        self,
        plugin: Strategy,
        name: str,
        available: Sequence[_Agent],
        task: TaskDemand,
        ns: _Namespace,
    ) -> RoutingDecision:
        exclude = task.exclude
        agents = [a for a in available if a.agent_id not in exclude] or list(available)
        if not agents:
            return _dead_end(ns, task, name)
        try:
            choice = plugin.select([a.view() for a in agents], task)
        except Exception as exc:
            logger.warning("strategy %s raised", name, exc_info=True)
            return _failed(name, f"strategy {name!r} raised {type(exc).__name__}: {exc}")
        chosen_id = choice.agent_id if isinstance(choice, Candidate) else choice
        if chosen_id is None:
            return RoutingDecision(
                None,
                name,
                MeshTaskReason.NO_MATCHING_AGENT,
                f"strategy {name!r} chose none of {_count(len(agents), 'candidate')}",
            )
        for agent in agents:
            if agent.agent_id == chosen_id:
                return _chosen(agent, task, name)
        return _failed(
            name,
            f"strategy {name!r} returned {chosen_id!r}, which is not one of its "
            f"{_count(len(agents), 'candidate')} ({_names(a.agent_id for a in agents)})",
        )

    def _plugin(self, name: str) -> Strategy | RoutingDecision:
        plugins = self._load_plugins()
        plugin = plugins.get(name)
        if plugin is not None:
            return plugin
        if name in self._plugin_errors:
            return _failed(name, self._plugin_errors[name])
        return RoutingDecision(
            None,
            name,
            MeshTaskReason.UNKNOWN_STRATEGY,
            f"unknown strategy {name!r}; known: {', '.join(self.known_strategies())}",
        )

    def _load_plugins(self) -> dict[str, Strategy]:
        if self._plugins is None:
            self._plugins, self._plugin_errors = self._load() if self._load else ({}, {})
        return self._plugins


_BUILTINS: Final[dict[str, _Builtin]] = {
    BuiltinStrategy.CAPABILITY_MATCH: Router._capability_match,
    BuiltinStrategy.LEAST_LOADED: Router._least_loaded,
    BuiltinStrategy.RANDOM: Router._random,
    BuiltinStrategy.ROUND_ROBIN: Router._round_robin,
}


def _chosen(agent: _Agent, task: TaskDemand, strategy: str) -> RoutingDecision:
    fallback = agent.agent_id in task.exclude
    note = " (already tried; no other candidate)" if fallback else ""
    return RoutingDecision(
        agent.agent_id,
        strategy,
        message=f"agent {agent.agent_id} chosen by {strategy}{note}",
        fallback=fallback,
    )


def _failed(strategy: str, message: str) -> RoutingDecision:
    return RoutingDecision(None, strategy, MeshTaskReason.STRATEGY_FAILED, message)


def _dead_end(
    ns: _Namespace, task: TaskDemand, strategy: str, pool: _Pool | None = None
) -> RoutingDecision:
    """`_why_none`, remembered when only an agent or health change can alter it."""
    decision = _why_none(ns, task, strategy, pool)
    if decision.reason is not MeshTaskReason.ALL_AGENTS_BUSY:
        if len(ns.dead_ends) >= _DEAD_ENDS_MAX:
            ns.dead_ends.clear()
        ns.dead_ends[(_shape(task), task.agent_ref, strategy)] = decision
    return decision


def _why_none(
    ns: _Namespace | None, task: TaskDemand, strategy: str, pool: _Pool | None = None
) -> RoutingDecision:
    """Why no agent: the first of capabilities, selector, health and load that rules every
    agent out. Runs only when routing found nothing; with the task's pool at hand it visits
    the agents that fit, stopping at the first healthy one (all busy, the usual case)."""
    where = f"namespace {task.namespace}"
    required = sorted(task.required_capabilities)
    missing = tuple(c for c in required if ns is None or c not in ns.holders)
    if missing:
        also = f" (nor {_names(missing[1:])})" if len(missing) > 1 else ""
        return RoutingDecision(
            None,
            strategy,
            MeshTaskReason.NO_CAPABLE_AGENT,
            f"no agent in {where} has capability {missing[0]}{also}",
            missing_capabilities=missing,
        )
    if ns is None:
        return RoutingDecision(
            None, strategy, MeshTaskReason.NO_CAPABLE_AGENT, f"no agent in {where}"
        )
    fitting: Iterable[str]
    if task.agent_ref is not None:
        pinned = ns.by_name.get(task.agent_ref)
        if pinned is None or not pinned.caps >= task.required_capabilities:
            lacks = (
                ""
                if pinned is None
                else ", which lacks " + _names(sorted(task.required_capabilities - pinned.caps))
            )
            return RoutingDecision(
                None,
                strategy,
                MeshTaskReason.NO_MATCHING_AGENT,
                f"agentRef {task.agent_ref} names no capable MeshAgent in {where}{lacks}",
            )
        fitting = (pinned.agent_id,) if _fits(pinned, task) else ()
    else:
        fitting = (pool or ns.pool(_shape(task))).members
    states: dict[str, int] = {}
    for agent_id in fitting:
        agent = ns.agents[agent_id]
        if agent.health is HealthStatus.HEALTHY:
            return RoutingDecision(
                None,
                strategy,
                MeshTaskReason.ALL_AGENTS_BUSY,
                f"every healthy agent in {where} that can take the task is at its "
                "maxConcurrentTasks",
            )
        states[agent.health] = states.get(agent.health, 0) + 1
    if states:
        matching = sum(states.values())
        detail = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        return RoutingDecision(
            None,
            strategy,
            MeshTaskReason.NO_HEALTHY_AGENT,
            f"{_count(matching, 'capable agent')} in {where}, none healthy ({detail})",
        )
    capable = ns.capable(task.required_capabilities)
    if not capable:
        return RoutingDecision(
            None,
            strategy,
            MeshTaskReason.NO_CAPABLE_AGENT,
            f"no agent in {where} has all of the capabilities {_names(required)} "
            "(each is held by some agent, none holds them all)",
        )
    return RoutingDecision(
        None,
        strategy,
        MeshTaskReason.NO_MATCHING_AGENT,
        f"{_count(len(capable), 'capable agent')} in {where}, none matching "
        f"agentSelector {_selector(task)}",
    )


def _selector(task: TaskDemand) -> str:
    parts = []
    if task.agent_type is not None:
        parts.append(f"agentType={task.agent_type}")
    if task.labels:
        parts.append("labels " + ",".join(f"{k}={v}" for k, v in sorted(task.labels.items())))
    if task.agent_ref is not None:
        parts.append(f"agentRef={task.agent_ref}")
    return "(" + "; ".join(parts) + ")"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_NAMES_SHOWN: Final = 5


def _names(names: Iterable[str]) -> str:
    listed = list(names)
    shown = ", ".join(listed[:_NAMES_SHOWN])
    more = len(listed) - _NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown
