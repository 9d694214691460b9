"""`agent-mesh agents` (the discovery query) and `agent-mesh tasks`: tables, or JSON, of
MeshAgents and MeshTasks read from the apiserver."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TextIO

from agent_mesh.commands.kubeclient import GROUP, VERSION, connect, failures
from agent_mesh.domain.clock import parse_rfc3339

AGENT_COLUMNS: Final = ("NAME", "TYPE", "HEALTH", "ACTIVE", "CAPABILITIES", "ENDPOINT")
TASK_COLUMNS: Final = ("NAME", "TYPE", "PHASE", "AGENT", "ATTEMPT", "AGE")


def agent_matches(
    agent: Mapping[str, Any],
    capabilities: Sequence[str],
    agent_type: str | None,
    health: str | None,
) -> bool:
    """The discovery query's rule: the agent holds every capability asked for (DESIGN §3),
    is of the type, and in the health, when they are given."""
    spec, status = agent.get("spec") or {}, agent.get("status") or {}
    held = set(spec.get("capabilities") or [])
    if not set(capabilities) <= held:
        return False
    if agent_type is not None and spec.get("agentType") != agent_type:
        return False
    return health is None or (status.get("healthStatus") or "pending") == health


def agent_row(agent: Mapping[str, Any]) -> tuple[str, ...]:
    meta, spec, status = agent["metadata"], agent.get("spec") or {}, agent.get("status") or {}
    return (
        meta["name"],
        str(spec.get("agentType") or ""),
        str(status.get("healthStatus") or "pending"),
        str(status.get("activeTasks") or 0),
        ",".join(spec.get("capabilities") or []) or "-",
        str(status.get("endpoint") or spec.get("endpoint") or "-"),
    )


def task_row(task: Mapping[str, Any], now: dt.datetime) -> tuple[str, ...]:
    meta, spec, status = task["metadata"], task.get("spec") or {}, task.get("status") or {}
    created = parse_rfc3339(meta.get("creationTimestamp"))
    return (
        meta["name"],
        str(spec.get("taskType") or ""),
        str(status.get("phase") or "-"),
        str(status.get("agentId") or "-"),
        str(status.get("attempt") or 0),
        age(now - created) if created else "-",
    )


def age(delta: dt.timedelta) -> str:
    """As kubectl prints it: 45s, 12m, 5h, 3d."""
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns three spaces apart, as kubectl prints them."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def render(
    items: Sequence[Mapping[str, Any]],
    header: Sequence[str],
    row: Callable[[Mapping[str, Any]], tuple[str, ...]],
    *,
    all_namespaces: bool,
    output: str,
    what: str,
    namespace: str,
) -> str:
    if output == "json":
        return json.dumps(list(items), indent=2)
    if not items:
        where = "in any namespace" if all_namespaces else f"in namespace {namespace}"
        return f"No {what} found {where}."
    rows = [row(i) for i in items]
    if all_namespaces:
        header = ("NAMESPACE", *header)
        rows = [(str(i["metadata"]["namespace"]), *r) for i, r in zip(items, rows, strict=True)]
    return table(header, rows)


async def _list(
    kubeconfig: str | None,
    namespace: str | None,
    all_namespaces: bool,
    plural: str,
    field_selector: str,
) -> tuple[list[dict[str, Any]], str]:
    connection = await connect(kubeconfig)
    ns = namespace or connection.namespace
    async with connection.api:
        where = "all namespaces" if all_namespaces else f"namespace {ns}"
        with failures(f"listing {plural}", where):
            if all_namespaces:
                found = await connection.custom.list_cluster_custom_object(
                    GROUP, VERSION, plural, field_selector=field_selector
                )
            else:
                found = await connection.custom.list_namespaced_custom_object(
                    GROUP, VERSION, ns, plural, field_selector=field_selector
                )
    items = sorted(
        found.get("items") or [],
        key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"]["name"]),
    )
    return items, ns


async def agents(
    *,
    kubeconfig: str | None,
    namespace: str | None,
    all_namespaces: bool,
    capabilities: Sequence[str],
    agent_type: str | None,
    health: str | None,
    output: str,
    out: TextIO = sys.stdout,
) -> int:
    selector = f"spec.agentType={agent_type}" if agent_type else ""
    items, ns = await _list(kubeconfig, namespace, all_namespaces, "meshagents", selector)
    chosen = [a for a in items if agent_matches(a, capabilities, agent_type, health)]
    print(
        render(
            chosen,
            AGENT_COLUMNS,
            agent_row,
            all_namespaces=all_namespaces,
            output=output,
            what="agents",
            namespace=ns,
        ),
        file=out,
    )
    return 0


async def tasks(
    *,
    kubeconfig: str | None,
    namespace: str | None,
    all_namespaces: bool,
    phase: str | None,
    task_type: str | None,
    output: str,
    out: TextIO = sys.stdout,
    now: dt.datetime | None = None,
) -> int:
    selectors = [f"status.phase={phase}"] if phase else []
    selectors += [f"spec.taskType={task_type}"] if task_type else []
    items, ns = await _list(kubeconfig, namespace, all_namespaces, "meshtasks", ",".join(selectors))
    moment = now or dt.datetime.now(dt.UTC)
    print(
        render(
            items,
            TASK_COLUMNS,
            lambda t: task_row(t, moment),
            all_namespaces=all_namespaces,
            output=output,
            what="tasks",
            namespace=ns,
        ),
        file=out,
    )
    return 0
