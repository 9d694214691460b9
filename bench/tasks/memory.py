"""Where the operator's memory per pending task goes: tracemalloc snapshots of a traced
operator (operator_shim.py), attributed to the package and line that allocated; and, in
this process, Coordinator.observe() of real task objects and kopf's memory per object."""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import os
import signal
import tracemalloc
from pathlib import Path
from typing import Any, cast

from agent_mesh.testing import OperatorProcess
from common.harness import wait_until


def fresh(template: dict[str, Any], i: int) -> dict[str, Any]:
    """A copy of a real MeshTask object as the watch decodes it: new strings, new uid."""
    body: dict[str, Any] = json.loads(json.dumps(template))
    body["metadata"]["uid"] = f"{i:08d}-0000-4000-8000-{i:012d}"
    body["metadata"]["name"] = f"attr-{i:06d}"
    body["metadata"]["resourceVersion"] = str(10_000_000 + i)
    body["spec"]["payload"] = {"i": i}
    return body


def coordinator_bytes_per_task(template: dict[str, Any], count: int) -> float:
    """Coordinator.observe() of `count` pending tasks (status and conditions as written)."""
    from agent_mesh.auth.audit import AuditLog
    from agent_mesh.auth.authority import Authority
    from agent_mesh.coordinator import Coordinator
    from agent_mesh.domain.agents import AgentRegistry
    from agent_mesh.domain.clock import SystemClock
    from agent_mesh.domain.health import HealthTracker

    coordinator = Coordinator(
        registry=AgentRegistry(),
        tracker=HealthTracker(),
        authority=cast(Authority, None),  # observe() never reaches it
        audit=AuditLog(),
        clock=SystemClock(),
    )
    bodies = [json.dumps(fresh(template, i)) for i in range(count)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for text in bodies:
        coordinator.observe(json.loads(text))
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert coordinator.get(fresh(template, 0)["metadata"]["uid"]) is not None
    return used / count


def kopf_bytes_per_object(template: dict[str, Any], count: int) -> float | None:
    """kopf's ResourceMemory per watched object (kept until the object is deleted), with
    the operator's memo copied into it as kopf does. Private kopf API: None if it moved."""
    try:
        import kopf
        from kopf._core.reactor.inventory import ResourceMemories
    except ImportError:
        return None
    memobase = kopf.Memo(config=object(), cert_dir=Path("/tmp"), runtime=object())
    bodies = [fresh(template, i) for i in range(count)]

    async def remember() -> tuple[Any, int]:
        memories = ResourceMemories()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for body in bodies:
            await memories.recall(cast(Any, body), memobase=cast(Any, memobase))
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return memories, used

    _, used = asyncio.run(remember())
    return used / count


def snapshot(op: OperatorProcess, traces: Path, n: int) -> Path:
    os.kill(op.pid, signal.SIGUSR1)
    path = traces / f"snap-{n}.bin"
    wait_until(f"tracemalloc snapshot {n}", path.exists, 120)
    return path


def allocated_by(frames: list[tracemalloc.Frame]) -> tuple[str, str]:
    """(package, site): the innermost frame of agent_mesh or an installed package that led
    to an allocation (stdlib frames such as json's are looked through)."""
    via = ""
    for frame in reversed(frames):  # most recent first
        path = frame.filename
        if "agent_mesh/" in path:
            rel = path.split("agent_mesh/", 1)[1]
            owner = "agent_mesh." + rel.removesuffix(".py").replace("/", ".")
            return owner, f"agent_mesh/{rel}:{frame.lineno}{via}"
        if "site-packages/" in path:
            rel = path.split("site-packages/", 1)[1]
            return rel.split("/", 1)[0].removesuffix(".py"), f"{rel}:{frame.lineno}{via}"
        if not via:
            via = f" (in {Path(path).name}:{frame.lineno})"
    last = frames[-1] if frames else None
    return "stdlib", f"{last.filename}:{last.lineno}" if last else "?"


def attribute(before: Path, after: Path, tasks: int, top: int = 15) -> dict[str, Any]:
    """Bytes per task the Python heap grew by, by package and by allocation site."""
    skip = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<unknown>")]
    old = tracemalloc.Snapshot.load(str(before)).filter_traces(skip)
    new = tracemalloc.Snapshot.load(str(after)).filter_traces(skip)
    packages: collections.Counter[str] = collections.Counter()
    sites: collections.Counter[str] = collections.Counter()
    total = 0
    for stat in new.compare_to(old, "traceback"):
        if not stat.size_diff:
            continue
        total += stat.size_diff
        package, site = allocated_by(list(stat.traceback))
        packages[package] += stat.size_diff
        sites[site] += stat.size_diff
    return {
        "traced_bytes_per_task": total / tasks,
        "by_package": {k: v / tasks for k, v in packages.most_common(top)},
        "by_site": {k: v / tasks for k, v in sites.most_common(top)},
    }
